#include "tpde/cache/block_cache.hpp"

#include <chrono>

namespace tpde::cache {

block_cache::block_cache(cache_options opts) : opts_(opts) {}

block_ptr block_cache::get(const block_key& key,
                           const std::function<std::vector<std::byte>()>& decode) {
    std::promise<block_ptr> promise;
    {
        std::unique_lock lock(mutex_);
        if (auto it = map_.find(key); it != map_.end()) {
            lru_.splice(lru_.begin(), lru_, it->second.lru);
            ++hits_;
            return it->second.data;
        }
        ++misses_;
        if (auto it = in_flight_.find(key); it != in_flight_.end()) {
            auto f = it->second;
            lock.unlock();
            ++waits_;
            return f.get();
        }
        in_flight_.emplace(key, promise.get_future().share());
    }
    block_ptr result;
    try {
        auto start = std::chrono::steady_clock::now();
        result = std::make_shared<const std::vector<std::byte>>(decode());
        decode_ns_ +=
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::steady_clock::now() - start)
                                           .count());
        ++decodes_;
    } catch (...) {
        std::lock_guard lock(mutex_);
        promise.set_exception(std::current_exception());
        in_flight_.erase(key);
        throw;
    }
    std::lock_guard lock(mutex_);
    promise.set_value(result);
    in_flight_.erase(key);
    insert_locked(key, result);
    return result;
}

block_ptr block_cache::find(const block_key& key) {
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    ++hits_;
    return it->second.data;
}

void block_cache::insert_locked(const block_key& key, block_ptr data) {
    // Larger than the whole cache: serve it, keep it not. Present already: a forget() raced.
    if (data->size() > opts_.max_bytes || map_.count(key)) return;
    lru_.push_front(key);
    bytes_ += data->size();
    map_[key] = entry{std::move(data), lru_.begin()};
    while (bytes_ > opts_.max_bytes && !lru_.empty()) {
        auto victim = map_.find(lru_.back());
        bytes_ -= victim->second.data->size();
        map_.erase(victim);
        lru_.pop_back();
    }
}

void block_cache::forget(std::uint64_t object) {
    std::lock_guard lock(mutex_);
    for (auto it = lru_.begin(); it != lru_.end();) {
        if (it->object == object) {
            auto m = map_.find(*it);
            bytes_ -= m->second.data->size();
            map_.erase(m);
            it = lru_.erase(it);
        } else {
            ++it;
        }
    }
}

cache_counters block_cache::counters() const {
    cache_counters c;
    c.hits = hits_;
    c.misses = misses_;
    c.decodes = decodes_;
    c.decode_ns = decode_ns_;
    c.waits = waits_;
    std::lock_guard lock(mutex_);
    c.bytes_cached = bytes_;
    return c;
}

} // namespace tpde::cache

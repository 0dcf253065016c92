#pragma once
// Decoded blocks shared by every reader: a byte-bounded LRU keyed by (object, block). A miss
// decodes on the calling thread; concurrent misses for one block wait for that one decode
// instead of repeating it. Knows nothing of files or FUSE: a block is bytes behind a key.
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tpde::cache {

struct cache_options {
    std::size_t max_bytes{512u << 20};
};

struct block_key {
    std::uint64_t object{0}; // unique per stored object (never reused)
    std::uint32_t block{0};
    bool operator==(const block_key&) const = default;
};

using block_ptr = std::shared_ptr<const std::vector<std::byte>>;

struct cache_counters {
    std::uint64_t hits{0};
    std::uint64_t misses{0};
    std::uint64_t decodes{0};      // decode functions run (misses that did the work)
    std::uint64_t decode_ns{0};    // time spent in them
    std::uint64_t waits{0};        // misses served by another thread's decode of the same block
    std::uint64_t bytes_cached{0}; // now
};

class block_cache {
public:
    explicit block_cache(cache_options opts = {});
    block_cache(const block_cache&) = delete;
    block_cache& operator=(const block_cache&) = delete;

    // The block for `key`, from the cache or from `decode()` (run at most once at a time per
    // key). An exception from decode reaches every waiter and caches nothing.
    block_ptr get(const block_key& key, const std::function<std::vector<std::byte>()>& decode);
    // The block if cached (counted as a hit), else null (not counted: the caller may decode
    // it elsewhere, or call get()).
    block_ptr find(const block_key& key);
    // Drops every block of `object` (it was replaced or deleted).
    void forget(std::uint64_t object);
    cache_counters counters() const;
    std::size_t max_bytes() const { return opts_.max_bytes; }

private:
    struct key_hash {
        std::size_t operator()(const block_key& k) const noexcept {
            return std::hash<std::uint64_t>{}(k.object * 0x9e3779b97f4a7c15ull ^ k.block);
        }
    };
    struct entry {
        block_ptr data;
        std::list<block_key>::iterator lru;
    };
    void insert_locked(const block_key& key, block_ptr data);

    cache_options opts_;
    mutable std::mutex mutex_;
    std::list<block_key> lru_; // front: most recent
    std::unordered_map<block_key, entry, key_hash> map_;
    std::unordered_map<block_key, std::shared_future<block_ptr>, key_hash> in_flight_;
    std::size_t bytes_{0};
    std::atomic<std::uint64_t> hits_{0}, misses_{0}, decodes_{0}, decode_ns_{0}, waits_{0};
};

} // namespace tpde::cache

#include <atomic>
#include <gtest/gtest.h>
#include <thread>

#include "tpde/cache/block_cache.hpp"

using namespace tpde::cache;

namespace {
std::vector<std::byte> bytes(std::size_t n, int v) {
    return std::vector<std::byte>(n, static_cast<std::byte>(v));
}
} // namespace

TEST(BlockCache, HitsMissesAndByteBound) {
    block_cache c({.max_bytes = 10000});
    int decodes = 0;
    auto get = [&](std::uint32_t b) {
        return c.get({1, b}, [&] {
            ++decodes;
            return bytes(3000, static_cast<int>(b));
        });
    };
    EXPECT_EQ((*get(0))[0], std::byte{0});
    EXPECT_EQ((*get(0))[0], std::byte{0});
    EXPECT_EQ(decodes, 1);
    get(1);
    get(2);
    EXPECT_EQ(c.counters().bytes_cached, 9000u);
    get(3); // evicts the least recently used (0)
    EXPECT_LE(c.counters().bytes_cached, 10000u);
    get(0);
    EXPECT_EQ(decodes, 5);
    auto k = c.counters();
    EXPECT_EQ(k.hits, 1u);
    EXPECT_EQ(k.misses, 5u);
    EXPECT_EQ(k.decodes, 5u);
    c.forget(1);
    EXPECT_EQ(c.counters().bytes_cached, 0u);
}

TEST(BlockCache, ConcurrentMissesDecodeOnce) {
    block_cache c;
    std::atomic<int> decodes{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; ++i)
        ts.emplace_back([&] {
            auto b = c.get({7, 7}, [&] {
                ++decodes;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                return bytes(100, 7);
            });
            EXPECT_EQ(b->size(), 100u);
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(decodes.load(), 1);
    EXPECT_EQ(c.counters().decodes, 1u);
}

TEST(BlockCache, FailedDecodeReachesEveryWaiterAndIsNotCached) {
    block_cache c;
    EXPECT_THROW(
        c.get({1, 1}, []() -> std::vector<std::byte> { throw std::runtime_error("bad frame"); }),
        std::runtime_error);
    auto b = c.get({1, 1}, [] { return bytes(5, 1); });
    EXPECT_EQ(b->size(), 5u);
}

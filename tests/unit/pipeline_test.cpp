#include <atomic>
#include <gtest/gtest.h>
#include <stdexcept>

#include "tpde/util/ordered_pipeline.hpp"

using namespace tpde::util;

TEST(OrderedPipeline, ResultsArriveInOrderAndBounded) {
    for (unsigned threads : {0u, 1u, 2u, 4u}) {
        std::unique_ptr<thread_pool> pool =
            threads ? std::make_unique<thread_pool>(threads) : nullptr;
        ordered_pipeline<int> pipe(pool.get(), 3);
        std::atomic<int> running{0}, max_running{0};
        std::vector<int> got;
        auto sink = [&](int v) { got.push_back(v); };
        for (int i = 0; i < 200; ++i) {
            pipe.push(
                [i, &running, &max_running] {
                    int r = ++running;
                    int m = max_running.load();
                    while (r > m && !max_running.compare_exchange_weak(m, r)) {
                    }
                    --running;
                    return i * i;
                },
                sink);
        }
        pipe.drain(sink);
        ASSERT_EQ(got.size(), 200u);
        for (int i = 0; i < 200; ++i) EXPECT_EQ(got[i], i * i);
        EXPECT_LE(max_running.load(), 3);
    }
}

TEST(OrderedPipeline, JobExceptionReachesTheCaller) {
    thread_pool pool(2);
    ordered_pipeline<int> pipe(&pool, 2);
    auto sink = [](int) {};
    pipe.push([] { return 1; }, sink);
    pipe.push([]() -> int { throw std::runtime_error("boom"); }, sink);
    EXPECT_THROW(pipe.drain(sink), std::runtime_error);
}

#pragma once
// A small fixed-size thread pool. Jobs run in submission order; the pool itself holds no
// bound: callers bound their own in-flight work (see ordered_pipeline).
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace tpde::util {

// Lowers the calling thread's CPU priority by `nice` levels (its nice value plus `nice`, at
// most 19); best effort.
void lower_this_thread_priority(int nice);
// Puts the calling thread's disk I/O in the idle class; best effort.
void set_this_thread_idle_io();

class thread_pool {
public:
    // `nice` > 0: the workers run that many nice levels below the creating thread;
    // `idle_io`: their disk I/O in the idle class.
    explicit thread_pool(unsigned threads, int nice = 0, bool idle_io = false);
    ~thread_pool();
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    template <typename F>
    auto submit(F&& f) -> std::future<std::invoke_result_t<F>> {
        using R = std::invoke_result_t<F>;
        auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
        auto fut = task->get_future();
        {
            std::lock_guard lock(mutex_);
            jobs_.emplace_back([task] { (*task)(); });
        }
        cv_.notify_one();
        return fut;
    }
    unsigned size() const { return static_cast<unsigned>(workers_.size()); }

private:
    void run();
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_{false};
    std::vector<std::thread> workers_;
    int nice_{0};
    bool idle_io_{false};
};

} // namespace tpde::util

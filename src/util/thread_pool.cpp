#include "tpde/util/thread_pool.hpp"

#include <algorithm>
#include <cerrno>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace tpde::util {

void lower_this_thread_priority(int nice) {
    // Linux: a thread's nice value is per thread (its tid), despite PRIO_PROCESS. Relative to
    // the value the thread inherited: under `nice -n 10`, workers go to 15, not back to 5.
    const auto tid = static_cast<id_t>(::gettid());
    errno = 0;
    const int now = ::getpriority(PRIO_PROCESS, tid);
    if (now == -1 && errno != 0) return;
    ::setpriority(PRIO_PROCESS, tid, std::min(19, now + nice));
}

void set_this_thread_idle_io() {
    // ioprio_set(IOPRIO_WHO_PROCESS, 0: this thread, IOPRIO_CLASS_IDLE): its disk requests
    // wait while others are queued (honoured by mq-deadline, bfq; none and kyber ignore it).
    constexpr int who_process = 1, class_idle = 3, class_shift = 13;
    ::syscall(SYS_ioprio_set, who_process, 0, class_idle << class_shift);
}

thread_pool::thread_pool(unsigned threads, int nice, bool idle_io)
    : nice_(nice), idle_io_(idle_io) {
    if (threads == 0) threads = 1;
    workers_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
}

thread_pool::~thread_pool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
}

void thread_pool::run() {
    if (nice_ > 0) lower_this_thread_priority(nice_);
    if (idle_io_) set_this_thread_idle_io();
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) return; // stopping, and nothing left to do
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        job();
    }
}

} // namespace tpde::util

#pragma once
// Runs independent jobs (one per block) on a pool and hands their results to a consumer in
// submission order, with at most `max_in_flight` jobs started but not consumed: memory stays
// bounded by a few blocks whatever the input size. Without a pool, jobs run inline.
#include <chrono>
#include <deque>
#include <future>
#include <optional>

#include "tpde/util/thread_pool.hpp"

namespace tpde::util {

template <typename R>
class ordered_pipeline {
public:
    ordered_pipeline(thread_pool* pool, std::size_t max_in_flight)
        : pool_(pool), max_in_flight_(max_in_flight ? max_in_flight : 1) {}

    // Submits `job`; may first hand finished results to `consume` to respect the bound.
    template <typename Job, typename Consume>
    void push(Job&& job, Consume&& consume) {
        if (!pool_) {
            consume(job());
            return;
        }
        while (pending_.size() >= max_in_flight_) pop(consume);
        pending_.push_back(pool_->submit(std::forward<Job>(job)));
    }
    // Hands the results already done to `consume` (in order, up to the first not done).
    template <typename Consume>
    void consume_ready(Consume&& consume) {
        while (!pending_.empty() &&
               pending_.front().wait_for(std::chrono::seconds(0)) == std::future_status::ready)
            pop(consume);
    }
    // Submits `job` only if that needs no wait: fewer than `max_in_flight` pending once the
    // finished ones are consumed. Returns false otherwise (the caller does the work its way).
    template <typename Job, typename Consume>
    bool try_push(Job&& job, Consume&& consume) {
        consume_ready(consume);
        if (!pool_ || pending_.size() >= max_in_flight_) return false;
        pending_.push_back(pool_->submit(std::forward<Job>(job)));
        return true;
    }
    std::size_t in_flight() const { return pending_.size(); }
    template <typename Consume>
    void drain(Consume&& consume) {
        while (!pending_.empty()) pop(consume);
    }
    ~ordered_pipeline() {
        for (auto& f : pending_) f.wait(); // jobs may reference the caller's buffers
    }

private:
    template <typename Consume>
    void pop(Consume& consume) {
        auto f = std::move(pending_.front());
        pending_.pop_front();
        consume(f.get()); // rethrows a job's exception here, in order
    }
    thread_pool* pool_;
    std::size_t max_in_flight_;
    std::deque<std::future<R>> pending_;
};

} // namespace tpde::util

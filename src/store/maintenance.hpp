#pragma once
// Work on a chain after the fact: re-encoding the previous version as a delta against a
// newly committed one (compaction), and freeing versions no file names (collection), which
// first re-encodes what was encoded against them; and the queue that runs that work.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "chain.hpp"

namespace tpde::store {

// After `vid` committed (or its successors were deleted): re-encodes the best standalone
// predecessor of it as a delta against it, if that keeps every version within
// max_read_depth frames per block. Returns whether it did.
bool compact_after_commit(store_context& ctx, const chain& c, const std::string& vid);

// Frees every version of the chain that no file names (link count 1), then lets standalone
// versions left behind become deltas again.
void collect_chain(store_context& ctx, const chain& c);

// Offers every version of the chain its best standalone predecessor (after a stop between a
// commit and its compaction, or after deletions).
void relink_chain(store_context& ctx, const chain& c);

// Compresses every live version of the chain that was written uncompressed and is not a
// delta (the newest, usually): standalone coding, so it reads at one frame per block.
void compress_uncompressed(store_context& ctx, const chain& c);

// Re-encodes version `vid` against `base` ("" = standalone) and swaps its object, unless the
// version changed meanwhile. Returns whether the swap happened.
bool reencode(store_context& ctx, const chain& c, const std::string& vid, const std::string& base);

// One piece of maintenance: after a commit of `version` (compact the previous version of
// the chain against it), compressing the raw blocks of the chain's newest versions (once
// writes have stopped for idle_compress_seconds), after a version of the chain lost its last
// name (collect), or a check of the whole chain (sweep: collect, relink, compress what is
// still uncompressed: work another node scheduled and did not finish).
struct maintenance_task {
    enum class kind { compact, collect, sweep, compress };
    kind what{kind::collect};
    std::string chain_id, version;
    auto operator<=>(const maintenance_task&) const = default;
};

// Runs maintenance tasks, in order, on a background thread at low CPU priority (a mount) or
// inline, before schedule() returns (tools, tests). A task already waiting is not queued
// again. A chain another process is maintaining (its work lock is taken) is put back and
// tried again a little later. Errors are logged: maintenance is an optimisation, every
// version stays readable without it. In the background, every sweep_interval of idleness the
// queue sweeps every chain.
class maintenance_queue {
public:
    // `background`: a thread of its own, and ctx.background_pool for its encoding.
    maintenance_queue(store_context& ctx, bool background);
    ~maintenance_queue(); // finishes what is queued
    maintenance_queue(const maintenance_queue&) = delete;
    maintenance_queue& operator=(const maintenance_queue&) = delete;

    void schedule(maintenance_task t);
    // Returns once nothing is queued or running (but compressions waiting for writes to
    // stop: an idle store may keep raw blocks until then, see idle_compress_seconds).
    void wait_idle();
    // Tasks queued or running (not counting those compressions).
    std::uint64_t pending() const;
    // Compressions of raw blocks waiting for writes to stop.
    std::uint64_t deferred_compressions() const;

private:
    using clock = std::chrono::steady_clock;
    struct queued_task {
        maintenance_task task;
        clock::time_point not_before;
        unsigned deferred{0}; // times the chain was found busy elsewhere
    };
    // Runs `t`; false when another process holds the chain's work lock (try again later).
    bool run(const maintenance_task& t, bool wait_for_lock);
    std::uint64_t runnable_locked() const;
    void loop();
    void schedule_sweep();

    store_context& ctx_;
    mutable std::mutex mutex_;
    std::condition_variable work_cv_, idle_cv_;
    std::deque<queued_task> tasks_;
    std::set<maintenance_task> queued_;
    bool busy_{false}, stopping_{false};
    clock::time_point last_sweep_{clock::now()};
    std::thread worker_;
};

} // namespace tpde::store

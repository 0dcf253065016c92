#pragma once
// State shared by the parts of one open store: directories, options, the decoded-block
// cache, the encode pool and counters. Internal to src/store.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>

#include "tpde/cache/block_cache.hpp"
#include "tpde/store/store.hpp"
#include "tpde/util/sys.hpp"
#include "tpde/util/thread_pool.hpp"

namespace tpde::store {

namespace sys = util::sys; // the store's system calls

// How long a lock of the store (a chain's, a path's) is waited for before the operation
// fails with EIO. A live process holds one for milliseconds; only a host that stopped
// answering holds one longer (GlusterFS keeps a frozen client's locks until it resumes).
inline constexpr unsigned lock_wait_ms = 30'000;

struct atomic_counters {
    std::atomic<std::uint64_t> commits{0}, bytes_committed{0}, bytes_written{0}, reencodes{0},
        versions_freed{0}, bytes_freed{0}, frames_decoded{0};
    store_counters snapshot() const {
        return {commits,        bytes_committed, bytes_written, reencodes,
                versions_freed, bytes_freed,     frames_decoded};
    }
};

struct store_context {
    std::filesystem::path root;
    store_options opts;
    std::string node; // this process's node name (opts.node or the host name)
    // tmp_dir is this node's own: tmp/<node>/ (work in progress of other nodes lives beside
    // it and is never touched while they run).
    sys::fd root_dir, ns_dir, chains_dir, tmp_dir;
    cache::block_cache cache;
    std::unique_ptr<util::thread_pool> pool; // null: encode on the calling thread
    // Re-encodings run here, at a lower priority, so writers, readers (and training) come
    // first on a busy machine. Null without background maintenance.
    std::unique_ptr<util::thread_pool> background_pool;
    // The pool for work started by this thread: the background one on maintenance threads.
    util::thread_pool* pool_for_this_thread() const;
    atomic_counters counters;

    store_context(std::filesystem::path r, const store_options& o)
        : root(std::move(r)), opts(o), cache(o.cache) {}
    std::string shown_ns(const std::string& path) const { return (root / "ns" / path).string(); }
    // When a writer last brought bytes (steady clock, ns): background work gives way to it.
    std::atomic<std::int64_t> last_foreground_write{0};
    void note_foreground_write() {
        last_foreground_write.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                                    std::memory_order_relaxed);
    }
    // Seconds since a writer last brought bytes.
    double seconds_since_foreground_write() const;
    // On a background thread: waits while writers are bringing bytes (one arrived in the last
    // 100 ms), so maintenance takes neither disk nor CPU from a save. Elsewhere: returns.
    void give_way_to_writers() const;
    // A fresh name for a temporary file under tmp/<node>/.
    std::string tmp_name(const char* what) const;
    std::string shown_tmp(const std::string& name) const {
        return (root / "tmp" / node / name).string();
    }
    static void mark_background_thread(); // this thread does maintenance
    static bool on_background_thread();
};

} // namespace tpde::store

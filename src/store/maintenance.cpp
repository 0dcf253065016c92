#include "maintenance.hpp"

#include <algorithm>
#include <fcntl.h>
#include <map>
#include <spdlog/spdlog.h>

#include "object_encoder.hpp"
#include "tpde/format/block_plan.hpp"
#include "tpde/format/dcp.hpp"

namespace tpde::store {
namespace {

using members = std::vector<chain::member>;

const chain::member* find(const members& ms, const std::string& vid) {
    for (const auto& m : ms)
        if (m.rec.version == vid) return &m;
    return nullptr;
}

// Longest chain of versions encoded (transitively) against `vid`.
unsigned depth_below(const members& ms, const std::string& vid, unsigned guard = 0) {
    if (guard > 4096) return guard;
    unsigned d = 0;
    for (const auto& m : ms)
        if (m.base == vid && m.error.empty())
            d = std::max(d, 1 + depth_below(ms, m.rec.version, guard + 1));
    return d;
}

std::uint64_t object_uid(const chain& c, const std::string& vid) {
    auto where = c.shown("objects/" + vid);
    return object_file(sys::open_at(c.objects(), vid, O_RDONLY, 0, where), where).footer().uid;
}

// The DCP .metadata in the directory `path` was committed in, if it is there and understood.
// torch.distributed.checkpoint writes it after every .distcp file of the step, so the
// compaction right after a .distcp commit usually runs before its successor's .metadata
// exists; later re-encodings (collection, relinking) find it.
std::optional<format::dcp_metadata> dcp_metadata_beside(store_context& ctx,
                                                        const std::string& path) {
    constexpr std::uint64_t max_metadata = 256u << 20;
    const auto dir = directory_of(path);
    const std::string rel = dir.empty() ? ".metadata" : dir + "/.metadata";
    const auto shown = ctx.shown_ns(rel);
    try {
        struct stat st {};
        if (!sys::stat_at(ctx.ns_dir.get(), rel, st) || !S_ISREG(st.st_mode)) return std::nullopt;
        auto rec = parse_record(sys::read_small_file(ctx.ns_dir.get(), rel, shown), shown);
        if (rec.size == 0 || rec.size > max_metadata) return std::nullopt;
        chain mc(ctx, rec.chain_id);
        std::shared_ptr<const version_reader> r;
        {
            chain_lock lock(mc.dir(), false);
            if (!sys::stat_at(mc.versions(), rec.version, st)) return std::nullopt;
            r = mc.open_version(rec.version, shown);
        }
        std::vector<std::byte> bytes(r->size());
        if (r->read(0, bytes) != bytes.size()) return std::nullopt;
        std::string why;
        auto md = format::read_dcp_metadata(bytes, &why);
        if (!md) spdlog::debug("{}: not understood ({}): items named by their order", shown, why);
        return md;
    } catch (const std::exception& e) {
        spdlog::debug("{}: not read ({}): items named by their order", shown, e.what());
        return std::nullopt;
    }
}

// A .distcp version's layout with its items named by the .metadata beside it.
format::file_layout named_layout(store_context& ctx, const chain& c, const std::string& vid,
                                 const format::file_layout& layout) {
    if (layout.kind != format::layout_kind::distcp) return layout;
    const auto path = c.record(vid).path;
    if (!path.ends_with(".distcp")) return layout;
    auto md = dcp_metadata_beside(ctx, path);
    if (!md) return layout;
    auto named = layout;
    format::name_dcp_items(named, *md, file_name_of(path));
    return named;
}

} // namespace

bool reencode(store_context& ctx, const chain& c, const std::string& vid, const std::string& base) {
    std::shared_ptr<const version_reader> target, ref;
    {
        chain_lock lock(c.dir(), false);
        target = c.open_version(vid, c.shown("versions/" + vid));
        if (!base.empty()) ref = c.open_version(base, c.shown("versions/" + base));
    }
    const auto& tf = target->footer();
    // DCP items matched by their names where the .metadata files are in the store; the
    // object keeps the layout its writer saw.
    const auto target_layout = named_layout(ctx, c, vid, tf.layout);
    std::optional<format::file_layout> ref_layout;
    if (ref) ref_layout = named_layout(ctx, c, base, ref->footer().layout);
    auto plan = format::plan_blocks(target_layout, ref_layout ? &*ref_layout : nullptr,
                                    ref ? ref->size() : 0, {.block_size = ctx.opts.block_size});
    object_encoder enc(ctx, c.shown("objects/" + vid));
    for (const auto& b : plan) {
        ctx.give_way_to_writers();
        std::vector<std::byte> block(b.size), refbytes(b.ref_size);
        target->read(b.offset, block);
        if (b.ref_size) ref->read(b.ref_offset, refbytes);
        enc.add(b.offset, std::move(block), b.type, b.ref_offset, std::move(refbytes));
    }
    enc.finish(tf.layout, base, tf.logical_size);
    {
        chain_lock lock(c.dir(), true);
        struct stat st {};
        // Someone else re-encoded it meanwhile, or it or its new base is gone: drop ours.
        if (object_uid(c, vid) != tf.uid) return false;
        if (!base.empty() && !sys::stat_at(c.versions(), base, st)) return false;
        lock.verify();
        enc.writer().publish(c.objects(), vid);
        sys::fsync_fd(c.objects(), c.shown("objects"));
    }
    ctx.cache.forget(tf.uid);
    ctx.counters.reencodes++;
    spdlog::debug("chain {}: version {} re-encoded against {} ({} -> {} bytes)", c.id(), vid,
                  base.empty() ? "nothing" : base, target->object().file_size(),
                  enc.writer().bytes_written());
    return true;
}

bool compact_after_commit(store_context& ctx, const chain& c, const std::string& vid) {
    members ms;
    {
        chain_lock lock(c.dir(), false);
        ms = c.scan();
    }
    const auto* next = find(ms, vid);
    if (!next || !next->error.empty() || next->rec.size == 0 || next->links < 2) return false;
    unsigned next_depth = 0;
    for (const auto* m = next; !m->base.empty() && next_depth < 4096; ++next_depth) {
        m = find(ms, m->base);
        if (!m) return false;
    }
    const chain::member* best = nullptr;
    std::vector<int> best_score;
    for (const auto& m : ms) {
        if (&m == next || !m.error.empty() || m.links < 2 || !m.base.empty() || m.rec.size == 0 ||
            m.rec.seq > next->rec.seq || !same_series(m.rec.path, next->rec.path))
            continue;
        auto score = digit_match_score(next->rec.path, m.rec.path);
        if (!best || score > best_score || (score == best_score && m.rec.seq > best->rec.seq)) {
            best = &m;
            best_score = std::move(score);
        }
    }
    if (!best) return false;
    // Reading the deepest version below `best` will take one more frame per block.
    if (next_depth + depth_below(ms, best->rec.version) + 2 > ctx.opts.max_read_depth) {
        spdlog::debug("chain {}: {} stays standalone (read depth limit {})", c.id(), best->rec.path,
                      ctx.opts.max_read_depth);
        return false;
    }
    return reencode(ctx, c, best->rec.version, vid);
}

// After deletions a standalone version (a read-depth keyframe, or one whose newer versions
// were all deleted) may be able to become a delta again: offer every version its best
// predecessor, oldest first.
static void relink(store_context& ctx, const chain& c, const members& ms) {
    std::vector<const chain::member*> order;
    for (const auto& m : ms) order.push_back(&m);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->rec.seq < b->rec.seq; });
    for (const auto* m : order) compact_after_commit(ctx, c, m->rec.version);
}

void relink_chain(store_context& ctx, const chain& c) {
    members ms;
    {
        chain_lock lock(c.dir(), false);
        ms = c.scan();
    }
    for (const auto& m : ms)
        if (!m.error.empty()) return; // as collect_chain: leave a damaged chain alone
    relink(ctx, c, ms);
}

void compress_uncompressed(store_context& ctx, const chain& c) {
    members ms;
    {
        chain_lock lock(c.dir(), false);
        ms = c.scan();
    }
    for (const auto& m : ms)
        if (m.error.empty() && m.uncompressed && m.base.empty() && m.links >= 2 && m.rec.size > 0)
            reencode(ctx, c, m.rec.version, "");
}

void collect_chain(store_context& ctx, const chain& c) {
    bool freed = false;
    for (int round = 0; round < 10000; ++round) {
        members ms;
        {
            chain_lock lock(c.dir(), false);
            ms = c.scan();
        }
        std::vector<const chain::member*> dead;
        for (const auto& m : ms) {
            if (!m.error.empty()) {
                // An unreadable version hides what it was encoded against: free nothing here
                // until fsck has been looked at.
                spdlog::warn("chain {}: not collecting: {}", c.id(), m.error);
                return;
            }
            if (m.links == 1) dead.push_back(&m);
        }
        if (dead.empty()) {
            if (freed) relink(ctx, c, ms);
            return;
        }
        bool progress = false;
        for (const auto* d : dead) {
            bool needed = std::any_of(ms.begin(), ms.end(),
                                      [&](const auto& m) { return m.base == d->rec.version; });
            if (needed) continue;
            chain_lock lock(c.dir(), true);
            struct stat st {};
            // Re-check under the lock: still unnamed, still nothing encoded against it.
            if (!sys::stat_at(c.versions(), d->rec.version, st) || st.st_nlink != 1) continue;
            bool now_needed = false;
            for (const auto& m : c.scan())
                if (m.base == d->rec.version) now_needed = true;
            if (now_needed) continue;
            lock.verify();
            // Record first: an object without a record is a leftover the next open removes;
            // a record without its object would be damage.
            sys::unlink_at(c.versions(), d->rec.version, 0, c.shown("versions/" + d->rec.version));
            sys::fsync_fd(c.versions(), c.shown("versions"));
            sys::unlink_at(c.objects(), d->rec.version, 0, c.shown("objects/" + d->rec.version));
            sys::fsync_fd(c.objects(), c.shown("objects"));
            ctx.cache.forget(d->uid);
            ctx.counters.versions_freed++;
            ctx.counters.bytes_freed += d->stored;
            spdlog::debug("chain {}: freed version {} ({} bytes)", c.id(), d->rec.version,
                          d->stored);
            progress = freed = true;
        }
        if (progress) continue;
        // Every dead version still has versions encoded against it: move those onto the
        // nearest live ancestor of the dead one (or make them standalone).
        const auto* d = dead.front();
        std::string target = d->base;
        for (int hop = 0; !target.empty() && hop < 4096; ++hop) {
            const auto* t = find(ms, target);
            if (!t || !t->error.empty()) {
                target.clear();
                break;
            }
            if (t->links >= 2) break;
            target = t->base;
        }
        for (const auto& m : ms)
            if (m.base == d->rec.version) reencode(ctx, c, m.rec.version, target);
    }
}

maintenance_queue::maintenance_queue(store_context& ctx, bool background) : ctx_(ctx) {
    if (!background) return;
    // Re-encodings run below writers, readers (and training) on a busy machine.
    constexpr int background_nice = 10;
    ctx_.background_pool = std::make_unique<util::thread_pool>(
        std::max(1u, ctx_.opts.encode_threads), background_nice, ctx_.opts.idle_io);
    worker_ = std::thread([this] {
        store_context::mark_background_thread();
        util::lower_this_thread_priority(background_nice);
        if (ctx_.opts.idle_io) util::set_this_thread_idle_io();
        loop();
    });
}

maintenance_queue::~maintenance_queue() {
    if (!worker_.joinable()) return;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_cv_.notify_all();
    worker_.join();
}

void maintenance_queue::schedule(maintenance_task t) {
    if (!worker_.joinable()) {
        run(t, true);
        return;
    }
    {
        std::lock_guard lock(mutex_);
        if (!queued_.insert(t).second) return;
        tasks_.push_back({std::move(t), clock::now()});
    }
    work_cv_.notify_one();
}

bool maintenance_queue::run(const maintenance_task& t, bool wait_for_lock) {
    try {
        chain c(ctx_, t.chain_id);
        chain_work_lock work(c.dir(), wait_for_lock);
        if (!work.held()) return false;
        switch (t.what) {
        case maintenance_task::kind::compact:
            // The previous version becomes a delta against this one. This one's raw blocks
            // (what the writer could not compress in time) wait: the next save re-encodes it
            // anyway, so they are compressed only once writes have stopped for a while.
            compact_after_commit(ctx_, c, t.version);
            if (worker_.joinable())
                schedule({maintenance_task::kind::compress, t.chain_id, {}});
            else
                compress_uncompressed(ctx_, c);
            break;
        case maintenance_task::kind::compress:
            compress_uncompressed(ctx_, c);
            break;
        case maintenance_task::kind::collect:
            collect_chain(ctx_, c);
            break;
        case maintenance_task::kind::sweep:
            collect_chain(ctx_, c);
            relink_chain(ctx_, c);
            compress_uncompressed(ctx_, c);
            break;
        }
    } catch (const sys::injected_crash&) {
        throw;
    } catch (const std::exception& e) {
        spdlog::error("store maintenance of chain {}: {}", t.chain_id, e.what());
    }
    return true;
}

void maintenance_queue::schedule_sweep() {
    std::vector<std::string> ids;
    try {
        ids = sys::list_dir(ctx_.chains_dir.get(), ".");
    } catch (const std::exception& e) {
        spdlog::error("store maintenance sweep: {}", e.what());
    }
    for (auto& id : ids) schedule({maintenance_task::kind::sweep, id, {}});
}

void maintenance_queue::loop() {
    using namespace std::chrono_literals;
    const auto sweep_every = std::chrono::seconds(ctx_.opts.sweep_seconds);
    std::unique_lock lock(mutex_);
    for (;;) {
        if (tasks_.empty()) {
            if (stopping_) return; // everything queued is done
            if (ctx_.opts.sweep_seconds > 0) {
                if (clock::now() - last_sweep_ >= sweep_every) {
                    last_sweep_ = clock::now();
                    lock.unlock();
                    schedule_sweep();
                    lock.lock();
                    continue;
                }
                work_cv_.wait_until(lock, last_sweep_ + sweep_every);
            } else {
                work_cv_.wait(lock);
            }
            continue;
        }
        if (stopping_) {
            // Raw blocks of the newest versions stay as they are: the next open's sweep
            // compresses them (an unmount does not wait for gigabytes of coding).
            std::erase_if(tasks_, [&](const queued_task& q) {
                bool drop = q.task.what == maintenance_task::kind::compress;
                if (drop) queued_.erase(q.task);
                return drop;
            });
            if (tasks_.empty()) {
                idle_cv_.notify_all();
                continue;
            }
        }
        // The first task whose time has come (a chain busy elsewhere waits its turn;
        // compression of raw blocks waits until writes have stopped for a while).
        auto now = clock::now();
        const double idle_for = ctx_.seconds_since_foreground_write();
        for (auto& q : tasks_)
            if (q.task.what == maintenance_task::kind::compress && !stopping_ &&
                idle_for < ctx_.opts.idle_compress_seconds)
                q.not_before = std::max(
                    q.not_before,
                    now + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(
                              ctx_.opts.idle_compress_seconds - idle_for)));
        auto it = std::find_if(tasks_.begin(), tasks_.end(), [&](const queued_task& q) {
            return stopping_ || q.not_before <= now;
        });
        if (it == tasks_.end()) {
            auto next = std::min_element(tasks_.begin(), tasks_.end(), [](auto& a, auto& b) {
                return a.not_before < b.not_before;
            });
            work_cv_.wait_until(lock, next->not_before);
            continue;
        }
        auto t = std::move(*it);
        tasks_.erase(it);
        busy_ = true;
        lock.unlock();
        bool done = true;
        try {
            done = run(t.task, false);
        } catch (...) {
        }
        lock.lock();
        busy_ = false;
        // Another node works on the chain: try again in a second, for a minute at most (it
        // does what this task would, or the next sweep finds what is left).
        if (done || stopping_ || ++t.deferred >= 60) {
            if (!done)
                spdlog::debug("chain {}: busy elsewhere, maintenance left to the sweep",
                              t.task.chain_id);
            queued_.erase(t.task);
        } else {
            t.not_before = clock::now() + 1s;
            tasks_.push_back(std::move(t));
        }
        if (runnable_locked() == 0) idle_cv_.notify_all();
    }
}

std::uint64_t maintenance_queue::runnable_locked() const {
    return static_cast<std::uint64_t>(
        std::count_if(tasks_.begin(), tasks_.end(), [](const queued_task& q) {
            return q.task.what != maintenance_task::kind::compress;
        }));
}

std::uint64_t maintenance_queue::pending() const {
    std::lock_guard lock(mutex_);
    return runnable_locked() + (busy_ ? 1 : 0);
}

std::uint64_t maintenance_queue::deferred_compressions() const {
    std::lock_guard lock(mutex_);
    return tasks_.size() - runnable_locked();
}

void maintenance_queue::wait_idle() {
    if (!worker_.joinable()) return;
    std::unique_lock lock(mutex_);
    idle_cv_.wait(lock, [&] { return runnable_locked() == 0 && !busy_; });
}

} // namespace tpde::store

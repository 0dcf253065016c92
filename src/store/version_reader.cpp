#include "version_reader.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <fmt/core.h>
#include <mutex>
#include <spdlog/spdlog.h>

#include "tpde/codec/codec.hpp"

namespace tpde::store {

version_reader::version_reader(store_context& ctx, std::shared_ptr<const object_file> obj,
                               std::shared_ptr<const version_reader> base, std::string shown)
    : ctx_(ctx), obj_(std::move(obj)), base_(std::move(base)), shown_(std::move(shown)) {}

std::size_t version_reader::block_at(std::uint64_t offset) const {
    const auto& blocks = obj_->footer().blocks;
    auto it =
        std::upper_bound(blocks.begin(), blocks.end(), offset,
                         [](std::uint64_t off, const block_entry& b) { return off < b.offset; });
    return static_cast<std::size_t>(it - blocks.begin()) - 1;
}

void version_reader::read_reference(std::size_t i, std::vector<std::byte>& ref) const {
    const auto& b = obj_->footer().blocks[i];
    ref.clear();
    if (!b.ref_size) return;
    if (!base_)
        throw corrupt_store(fmt::format("{}: block {} of {} needs a base version it does not name",
                                        shown_, i, obj_->shown()));
    if (b.ref_offset > base_->size() || base_->size() - b.ref_offset < b.ref_size)
        throw corrupt_store(fmt::format("{}: block {} refers past the end of its base", shown_, i));
    ref.resize(b.ref_size);
    if (base_->read(b.ref_offset, ref) != b.ref_size)
        throw corrupt_store(fmt::format("{}: block {} refers past the end of its base", shown_, i));
}

void version_reader::decode_frame(std::size_t i, std::span<const std::byte> ref,
                                  std::span<std::byte> out) const {
    const auto& b = obj_->footer().blocks[i];
    thread_local std::vector<std::byte> frame;
    obj_->read_frame_into(i, frame);
    try {
        codec::decode_options o;
        o.max_raw_size = b.size;
        codec::decode_into(frame, ref, out, o);
        ctx_.counters.frames_decoded++;
    } catch (const codec::decode_error& e) {
        auto msg = fmt::format("{}: block {} at offset {} in {}: {}", shown_, i, b.offset,
                               obj_->shown(), e.what());
        spdlog::debug("{}", msg); // the caller reports it (the mount logs every EIO)
        throw corrupt_store(msg);
    }
}

void version_reader::decode_block_into(std::size_t i, std::span<std::byte> out) const {
    std::vector<std::byte> ref;
    read_reference(i, ref);
    decode_frame(i, ref, out);
}

std::vector<std::byte> version_reader::decode_block(std::size_t i) const {
    std::vector<std::byte> out(obj_->footer().blocks[i].size);
    decode_block_into(i, out);
    return out;
}

cache::block_ptr version_reader::block(std::size_t i) const {
    return ctx_.cache.get({obj_->footer().uid, static_cast<std::uint32_t>(i)},
                          [&] { return decode_block(i); });
}

namespace {
// Blocks of one read shared out between the calling thread and pool workers. Each thread
// claims the next unclaimed block; the caller waits only for blocks already claimed, so a
// worker that starts late finds nothing to do, and nobody waits on a job that never ran
// (which would deadlock when the caller is itself a pool worker).
struct direct_job {
    std::vector<std::size_t> blocks;
    std::vector<std::span<std::byte>> dest;
    std::atomic<std::size_t> next{0};
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t done{0};
    std::exception_ptr error;

    void work(const version_reader& r) {
        for (;;) {
            auto k = next.fetch_add(1);
            if (k >= blocks.size()) return;
            std::exception_ptr e;
            try {
                r.decode_block_into(blocks[k], dest[k]);
            } catch (...) {
                e = std::current_exception();
            }
            std::lock_guard lock(mutex);
            if (e && !error) error = e;
            if (++done == blocks.size()) cv.notify_all();
        }
    }
};
} // namespace

void version_reader::decode_direct(const std::vector<std::size_t>& blocks, std::uint64_t offset,
                                   std::span<std::byte> out) const {
    auto job = std::make_shared<direct_job>();
    job->blocks = blocks;
    for (auto i : blocks) {
        const auto& b = obj_->footer().blocks[i];
        job->dest.push_back(out.subspan(static_cast<std::size_t>(b.offset - offset), b.size));
    }
    if (ctx_.pool_for_this_thread() && blocks.size() > 1) {
        auto* pool = ctx_.pool_for_this_thread();
        auto helpers = std::min<std::size_t>(pool->size(), blocks.size() - 1);
        for (std::size_t h = 0; h < helpers; ++h)
            pool->submit([job, self = shared_from_this()] { job->work(*self); });
    }
    job->work(*this);
    std::unique_lock lock(job->mutex);
    job->cv.wait(lock, [&] { return job->done == job->blocks.size(); });
    if (job->error) std::rethrow_exception(job->error);
}

std::size_t version_reader::read(std::uint64_t offset, std::span<std::byte> out) const {
    auto total = size();
    if (offset >= total || out.empty()) return 0;
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), total - offset));
    const auto& blocks = obj_->footer().blocks;
    const auto first = block_at(offset), last = block_at(offset + n - 1);
    // Whole blocks not in the cache are decoded straight into `out` (no allocation, in
    // parallel); blocks cut by the read's edges go through the cache, where the next read
    // finds the rest of them.
    std::vector<std::size_t> direct;
    for (auto i = first; i <= last; ++i) {
        const auto& b = blocks[i];
        auto from = std::max(offset, b.offset), to = std::min(offset + n, b.offset + b.size);
        bool whole = from == b.offset && to == b.offset + b.size;
        auto cached =
            whole ? ctx_.cache.find({obj_->footer().uid, static_cast<std::uint32_t>(i)}) : block(i);
        if (cached)
            std::memcpy(out.data() + (from - offset), cached->data() + (from - b.offset),
                        to - from);
        else
            direct.push_back(i);
    }
    if (!direct.empty()) decode_direct(direct, offset, out.first(n));
    // Small sequential reads (a FUSE read stream) get the next blocks decoded ahead.
    if (next_offset_.exchange(offset + n) == offset && last - first < 2) read_ahead(last + 1);
    return n;
}

void version_reader::read_ahead(std::size_t next_block) const {
    if (!ctx_.pool || ctx_.opts.read_ahead_blocks == 0) return;
    const auto count = obj_->footer().blocks.size();
    const auto end = std::min(count, next_block + ctx_.opts.read_ahead_blocks);
    const unsigned max_in_flight = 2 * ctx_.pool->size();
    for (auto j = std::max(next_block, read_ahead_until_.load()); j < end; ++j) {
        if (read_ahead_in_flight_.load() >= max_in_flight) break;
        read_ahead_until_ = j + 1;
        ++read_ahead_in_flight_;
        ctx_.pool->submit([self = shared_from_this(), j] {
            try {
                self->block(j);
            } catch (...) { // the reader that needs it will decode it again and report
            }
            --self->read_ahead_in_flight_;
        });
    }
}

} // namespace tpde::store

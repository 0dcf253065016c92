#include "file_writer.hpp"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tpde/format/block_plan.hpp"

namespace tpde::store {
namespace {
constexpr std::size_t copy_chunk = 1u << 20;
} // namespace

store_file_writer::store_file_writer(store_context& ctx, version_publisher& host, std::string path,
                                     const std::string& expected_version,
                                     std::shared_ptr<const version_reader> current, bool dirty)
    : ctx_(ctx), host_(host), path_(std::move(path)), expected_version_(expected_version),
      dirty_(dirty), current_(std::move(current)) {
    if (current_ && current_->size() > 0) {
        mode_ = mode::unchanged;
        size_ = current_->size();
    } else {
        current_.reset();
        start_sequential();
    }
}

store_file_writer::~store_file_writer() {
    encoder_.reset(); // removes its unpublished object
    if (staging_) {
        staging_.reset();
        try {
            sys::remove_if_exists(ctx_.tmp_dir.get(), staging_name_);
        } catch (...) { // recovery removes it on the next open
        }
    }
}

void store_file_writer::start_sequential() {
    mode_ = mode::sequential;
    size_ = 0;
    format::stream_options so;
    so.max_lookahead = 16u << 20; // bounds what a writer holds while a pickle has no end yet
    segmenter_ = std::make_unique<format::stream_segmenter>(so);
    encoder_ = std::make_unique<object_encoder>(ctx_, shown(), ctx_.opts.write_mode);
    cutter_ = std::make_unique<format::block_cutter>(
        nullptr, 0, format::plan_options{.block_size = ctx_.opts.block_size});
    pending_.clear();
    pending_base_ = encoded_until_ = 0;
}

void store_file_writer::emit(std::uint64_t end, std::optional<codec::element_type> type) {
    const std::uint64_t pending_end = pending_base_ + pending_.size();
    const auto from = encoded_until_;
    std::span<const std::byte> block;
    if (from >= pending_end) { // all in the caller's buffer: no copy
        block = incoming_.subspan(static_cast<std::size_t>(from - pending_end),
                                  static_cast<std::size_t>(end - from));
    } else if (end <= pending_end) {
        block = std::span<const std::byte>(pending_).subspan(
            static_cast<std::size_t>(from - pending_base_), static_cast<std::size_t>(end - from));
    } else {
        straddle_.assign(pending_.begin() + static_cast<std::ptrdiff_t>(from - pending_base_),
                         pending_.end());
        straddle_.insert(straddle_.end(), incoming_.begin(),
                         incoming_.begin() + static_cast<std::ptrdiff_t>(end - pending_end));
        block = straddle_;
    }
    encoder_->add(from, block, type);
    encoded_until_ = end;
}

// Keeps what no block has taken: pending_ is dropped once consumed (or its consumed prefix
// now and then, not per block: that would be quadratic), and only the unconsumed part of the
// caller's bytes is copied.
void store_file_writer::keep_unencoded() {
    const std::uint64_t pending_end = pending_base_ + pending_.size();
    auto consumed = static_cast<std::size_t>(std::min(encoded_until_, pending_end) - pending_base_);
    if (consumed == pending_.size()) {
        pending_.clear();
        pending_base_ = std::max(encoded_until_, pending_end);
    } else if (consumed >= (4u << 20)) {
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(consumed));
        pending_base_ += consumed;
    }
    auto taken = static_cast<std::size_t>(pending_base_ + pending_.size() - pending_end);
    pending_.insert(pending_.end(), incoming_.begin() + static_cast<std::ptrdiff_t>(taken),
                    incoming_.end());
    incoming_ = {};
}

// Hands every block the cutter can decide with the bytes that have arrived to the encoder.
void store_file_writer::emit_blocks() {
    while (auto b = cutter_->next(size_)) emit(b->offset + b->size, b->type);
}

void store_file_writer::write(std::uint64_t offset, std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    dirty_ = true;
    ctx_.note_foreground_write();
    if (mode_ == mode::sequential && offset == size_) {
        incoming_ = bytes;
        size_ += bytes.size();
        try {
            for (auto& s : segmenter_->feed(bytes)) cutter_->add(std::move(s));
            emit_blocks();
            encoder_->write_borrowed(); // blocks in `bytes` and pending_, which changes next
        } catch (...) {
            try {
                encoder_->write_borrowed();
            } catch (...) { // the object is marked failed: nothing reads the blocks again
            }
            keep_unencoded();
            throw;
        }
        keep_unencoded();
        return;
    }
    to_staged();
    sys::pwrite_all(staging_.get(), bytes, offset, shown());
    size_ = std::max(size_, offset + bytes.size());
}

void store_file_writer::truncate(std::uint64_t size) {
    if (size == size_) return;
    dirty_ = true;
    if (size == 0) {
        if (staging_) {
            staging_.reset();
            sys::remove_if_exists(ctx_.tmp_dir.get(), staging_name_);
        }
        current_.reset();
        start_sequential();
        return;
    }
    to_staged();
    sys::mutation_point();
    if (::ftruncate(staging_.get(), static_cast<off_t>(size)) != 0)
        sys::fail("cannot truncate", shown());
    size_ = size;
}

std::size_t store_file_writer::read(std::uint64_t offset, std::span<std::byte> out) {
    if (mode_ == mode::unchanged) return current_->read(offset, out);
    if (offset >= size_) return 0;
    to_staged();
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size_ - offset));
    std::memset(out.data(), 0, n); // holes read as zeros even if pread stops short
    auto got = ::pread(staging_.get(), out.data(), n, static_cast<off_t>(offset));
    if (got < 0) sys::fail("cannot read", shown());
    return n;
}

void store_file_writer::to_staged() {
    if (mode_ == mode::staged) return;
    staging_name_ = ctx_.tmp_name("staging");
    staging_ =
        sys::open_at(ctx_.tmp_dir.get(), staging_name_, O_RDWR | O_CREAT | O_EXCL, 0600, shown());
    std::vector<std::byte> buf;
    if (mode_ == mode::unchanged) {
        buf.resize(copy_chunk);
        for (std::uint64_t off = 0; off < size_;) {
            auto n = current_->read(off, buf);
            sys::pwrite_all(staging_.get(), {buf.data(), n}, off, shown());
            off += n;
        }
        current_.reset();
    } else { // sequential: what is encoded already, then what is not
        encoder_->drain();
        for (std::size_t i = 0; i < encoder_->blocks().size(); ++i)
            sys::pwrite_all(staging_.get(), encoder_->read_back(i), encoder_->blocks()[i].offset,
                            shown());
        sys::pwrite_all(staging_.get(), pending_, pending_base_, shown());
        encoder_.reset();
        segmenter_.reset();
        cutter_.reset();
        pending_ = {};
    }
    sys::mutation_point();
    if (::ftruncate(staging_.get(), static_cast<off_t>(size_)) != 0)
        sys::fail("cannot truncate", shown());
    mode_ = mode::staged;
}

bool store_file_writer::commit() {
    if (!dirty_) return true;
    std::unique_ptr<object_encoder> staged_encoder;
    object_encoder* enc = nullptr;
    if (mode_ == mode::sequential) {
        auto layout = segmenter_->finish();
        cutter_->finish(layout);
        emit_blocks();
        encoder_->finish(std::move(layout), "", size_);
        enc = encoder_.get();
    } else {
        staged_encoder = std::make_unique<object_encoder>(ctx_, shown(), ctx_.opts.write_mode);
        enc = staged_encoder.get();
        format::file_layout layout = format::generic_layout(size_);
        if (size_ > 0) {
            void* m = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, staging_.get(), 0);
            if (m == MAP_FAILED) sys::fail("cannot map", shown());
            layout = format::segment_file({static_cast<const std::byte*>(m), size_});
            ::munmap(m, size_);
        }
        auto plan = format::plan_blocks(layout, nullptr, 0, {.block_size = ctx_.opts.block_size});
        for (const auto& b : plan) {
            std::vector<std::byte> block(b.size);
            sys::pread_exact(staging_.get(), block, b.offset, shown());
            enc->add(b.offset, std::move(block), b.type);
        }
        enc->finish(std::move(layout), "", size_);
    }
    auto committed = host_.publish(path_, expected_version_, *enc, size_);
    if (mode_ == mode::sequential) {
        // Further writes after a commit are rare (fsync, then more): they start from what
        // was committed.
        encoder_.reset();
        segmenter_.reset();
        cutter_.reset();
        pending_ = {};
        current_ = !committed.empty() && size_ ? host_.open_version_of(path_) : nullptr;
        if (current_)
            mode_ = mode::unchanged;
        else
            start_sequential();
    }
    if (committed.empty()) return false;
    expected_version_ = committed;
    dirty_ = false;
    return true;
}

} // namespace tpde::store

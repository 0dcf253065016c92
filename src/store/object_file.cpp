#include "object_file.hpp"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <fmt/core.h>
#include <random>
#include <sys/stat.h>

#include "tpde/util/little_endian.hpp"
#include "tpde/util/xxhash.hpp"

namespace tpde::store {
namespace {

constexpr char header_magic[8] = {'T', 'P', 'D', 'O', 'B', 'J', 0, 1};
constexpr char tail_magic[8] = {'T', 'P', 'D', 'O', 'E', 'N', 'D', '1'};
constexpr std::size_t write_buffer_size = 1u << 20;
constexpr std::size_t direct_write_min = 64u << 10; // larger payloads skip the buffer
// Gathered payloads are written in calls of about this size: ext4 writes back a file written
// in 1 MiB calls about 20% faster than one written in 128 KiB calls (its page-cache folios
// follow the write size), and a raw frame is one 128 KiB block. Gathered payloads are at least
// direct_write_min, so a batch holds at most 16 frames.
constexpr std::size_t gather_bytes = 1u << 20;
constexpr std::uint8_t no_type = 0xff;
constexpr std::uint64_t writeback_step = 8u << 20;
constexpr std::uint8_t flag_uncompressed = 1; // raw frames, for maintenance to compress
constexpr std::uint8_t flag_named = 2;        // segments' checkpoint names follow

using util::byte_sink;
using util::load_le;
using util::store_le;
// A footer read past its end: reported as the object's damage (corrupt_store) by the caller.
struct footer_truncated : std::runtime_error {
    using std::runtime_error::runtime_error;
};
using byte_source = util::byte_source<footer_truncated>;

} // namespace

std::uint64_t new_object_uid() {
    // Unique across processes and hosts sharing a store: random, never derived from a
    // counter or a pid.
    static thread_local std::mt19937_64 rng{[] {
        std::random_device rd;
        return (std::uint64_t{rd()} << 32) ^ rd();
    }()};
    std::uint64_t v;
    do v = rng();
    while (v == 0);
    return v;
}

std::vector<std::byte> encode_footer(const object_footer& f) {
    std::vector<std::byte> out;
    byte_sink s(out);
    s.put<std::uint64_t>(f.uid);
    s.put<std::uint64_t>(f.logical_size);
    s.put<std::uint16_t>(static_cast<std::uint16_t>(f.base_version.size()));
    s.put_bytes(std::as_bytes(std::span(f.base_version)));
    s.put<std::uint32_t>(static_cast<std::uint32_t>(f.blocks.size()));
    for (const auto& b : f.blocks) {
        s.put<std::uint64_t>(b.offset);
        s.put<std::uint32_t>(b.size);
        s.put<std::uint64_t>(b.frame_pos);
        s.put<std::uint32_t>(b.frame_len);
        s.put<std::uint64_t>(b.ref_offset);
        s.put<std::uint32_t>(b.ref_size);
    }
    s.put<std::uint8_t>(static_cast<std::uint8_t>(f.layout.kind));
    s.put<std::uint32_t>(static_cast<std::uint32_t>(f.layout.segments.size()));
    for (const auto& seg : f.layout.segments) {
        s.put<std::uint16_t>(static_cast<std::uint16_t>(seg.name.size()));
        s.put_bytes(std::as_bytes(std::span(seg.name)));
        s.put<std::uint64_t>(seg.offset);
        s.put<std::uint64_t>(seg.length);
        s.put<std::uint8_t>(seg.type ? static_cast<std::uint8_t>(*seg.type) : no_type);
    }
    s.put<std::uint64_t>(f.elements);
    s.put<std::uint64_t>(f.changed);
    // Segments' checkpoint names and row sizes follow the flags, flagged by bit 1, only where
    // a segment has one: other objects stay as older versions wrote and read them.
    const bool named = std::any_of(
        f.layout.segments.begin(), f.layout.segments.end(),
        [](const format::segment& seg) { return !seg.tensor.empty() || seg.row_bytes != 0; });
    s.put<std::uint8_t>((f.uncompressed ? flag_uncompressed : 0) | (named ? flag_named : 0));
    if (named)
        for (const auto& seg : f.layout.segments) {
            // Names are bounded far below this by the segmenters; one that is not is dropped.
            std::string_view t = seg.tensor.size() <= 0xffff ? seg.tensor : std::string_view{};
            s.put<std::uint16_t>(static_cast<std::uint16_t>(t.size()));
            s.put_bytes(std::as_bytes(std::span(t)));
            s.put<std::uint64_t>(seg.row_bytes);
        }
    return out;
}

object_footer decode_footer(std::span<const std::byte> bytes, const std::string& shown) {
    try {
        byte_source s(bytes, "object footer");
        object_footer f;
        f.uid = s.get<std::uint64_t>();
        f.logical_size = s.get<std::uint64_t>();
        auto base = s.get_bytes(s.get<std::uint16_t>());
        f.base_version.assign(reinterpret_cast<const char*>(base.data()), base.size());
        auto nblocks = s.get<std::uint32_t>();
        if (nblocks > s.remaining() / 36) throw corrupt_store(shown + ": block table truncated");
        f.blocks.resize(nblocks);
        std::uint64_t expect = 0;
        for (auto& b : f.blocks) {
            b.offset = s.get<std::uint64_t>();
            b.size = s.get<std::uint32_t>();
            b.frame_pos = s.get<std::uint64_t>();
            b.frame_len = s.get<std::uint32_t>();
            b.ref_offset = s.get<std::uint64_t>();
            b.ref_size = s.get<std::uint32_t>();
            if (b.offset != expect || b.size == 0)
                throw corrupt_store(shown + ": block table has gaps");
            expect += b.size;
        }
        if (expect != f.logical_size)
            throw corrupt_store(shown + ": blocks do not add up to the file size");
        auto kind = s.get<std::uint8_t>();
        if (kind > static_cast<std::uint8_t>(format::layout_kind::distcp))
            throw corrupt_store(shown + ": unknown layout kind");
        f.layout.kind = static_cast<format::layout_kind>(kind);
        auto nseg = s.get<std::uint32_t>();
        if (nseg > s.remaining() / 19) throw corrupt_store(shown + ": segment table truncated");
        f.layout.segments.resize(nseg);
        for (auto& seg : f.layout.segments) {
            auto name = s.get_bytes(s.get<std::uint16_t>());
            seg.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
            seg.offset = s.get<std::uint64_t>();
            seg.length = s.get<std::uint64_t>();
            auto t = s.get<std::uint8_t>();
            if (t != no_type) {
                if (!codec::is_valid(t)) throw corrupt_store(shown + ": unknown element type");
                seg.type = static_cast<codec::element_type>(t);
            }
        }
        f.elements = s.get<std::uint64_t>();
        f.changed = s.get<std::uint64_t>();
        auto flags = s.get<std::uint8_t>();
        if (flags & ~(flag_uncompressed | flag_named))
            throw corrupt_store(shown + ": unknown object flags");
        f.uncompressed = flags & flag_uncompressed;
        if (flags & flag_named) {
            if (nseg > s.remaining() / 10) throw corrupt_store(shown + ": segment names truncated");
            bool any = false;
            for (auto& seg : f.layout.segments) {
                auto tensor = s.get_bytes(s.get<std::uint16_t>());
                seg.tensor.assign(reinterpret_cast<const char*>(tensor.data()), tensor.size());
                seg.row_bytes = s.get<std::uint64_t>();
                any |= !seg.tensor.empty() || seg.row_bytes != 0;
            }
            // The writer sets the flag only for a footer that has names.
            if (!any) throw corrupt_store(shown + ": segment names flagged but empty");
        }
        if (s.remaining() != 0) throw corrupt_store(shown + ": trailing bytes in footer");
        return f;
    } catch (const footer_truncated&) {
        throw corrupt_store(shown + ": object footer truncated");
    }
}

object_writer::object_writer(int dirfd, std::string tmp_name, std::string shown, writeback policy)
    : dirfd_(dirfd), tmp_name_(std::move(tmp_name)), shown_(std::move(shown)),
      uid_(new_object_uid()), policy_(policy) {
    fd_ = sys::open_at(dirfd_, tmp_name_, O_RDWR | O_CREAT | O_EXCL, 0600, shown_);
    buffer_.reserve(write_buffer_size);
    std::byte h[object_header_size];
    std::memcpy(h, header_magic, 8);
    store_le<std::uint64_t>(h + 8, uid_);
    buffer_.insert(buffer_.end(), h, h + object_header_size);
}

object_writer::~object_writer() {
    if (!has_temporary_name_) return;
    fd_.reset();
    try {
        sys::remove_if_exists(dirfd_, tmp_name_);
    } catch (...) { // a simulated crash, or the disk went away: recovery removes it later
    }
}

void object_writer::check_usable() const {
    if (failed_errno_ != 0)
        throw store_error(failed_errno_,
                          fmt::format("{}: not written: an earlier write failed ({})", shown_,
                                      std::strerror(failed_errno_)));
}

void object_writer::put(std::span<const std::span<const std::byte>> parts) {
    try {
        sys::pwritev_all(fd_.get(), parts, pos_, shown_);
    } catch (const store_error& e) {
        failed_errno_ = e.error_number();
        throw;
    } catch (...) { // a simulated crash
        failed_errno_ = EIO;
        throw;
    }
    for (auto p : parts) pos_ += p.size();
    if (policy_ != writeback::lazy) write_back_behind();
}

// Every writeback_step written: start writing back the step just written; under `bounded`,
// also wait for the step before it and drop it from the page cache, so at most two steps of
// this object are dirty at any time. Best effort: the fsync at the end is what counts.
void object_writer::write_back_behind() {
    if (pos_ - started_until_ < writeback_step) return;
    const auto start = started_until_;
    started_until_ = pos_ - pos_ % writeback_step;
    ::sync_file_range(fd_.get(), static_cast<off_t>(start),
                      static_cast<off_t>(started_until_ - start), SYNC_FILE_RANGE_WRITE);
    if (policy_ != writeback::bounded || start <= settled_until_) return;
    ::sync_file_range(
        fd_.get(), static_cast<off_t>(settled_until_), static_cast<off_t>(start - settled_until_),
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    ::posix_fadvise(fd_.get(), static_cast<off_t>(settled_until_),
                    static_cast<off_t>(start - settled_until_), POSIX_FADV_DONTNEED);
    settled_until_ = start;
}

void object_writer::write_gathered() {
    check_usable();
    if (buffer_.empty() && gathered_.empty()) return;
    parts_.clear();
    parts_.emplace_back(buffer_);
    for (const auto& g : gathered_) {
        parts_.emplace_back(gathered_headers_.data() + g.header_at, g.header_size);
        parts_.push_back(g.payload);
    }
    put(parts_);
    buffer_.clear();
    gathered_.clear();
    gathered_headers_.clear();
    gathered_bytes_ = 0;
}

std::uint64_t object_writer::append(std::span<const std::byte> frame) {
    check_usable();
    if (!gathered_.empty()) write_gathered(); // the buffer holds only bytes before the gathered
    auto at = bytes_written();
    if (buffer_.size() + frame.size() > write_buffer_size) write_gathered();
    if (frame.size() >= write_buffer_size) {
        put(std::span(&frame, 1));
    } else {
        buffer_.insert(buffer_.end(), frame.begin(), frame.end());
    }
    return at;
}

std::uint64_t object_writer::append(std::span<const std::byte> header,
                                    std::span<const std::byte> payload) {
    if (payload.size() < direct_write_min) {
        auto at = append(header);
        append(payload);
        return at;
    }
    check_usable();
    auto at = bytes_written();
    gathered_.push_back({gathered_headers_.size(), header.size(), payload});
    gathered_headers_.insert(gathered_headers_.end(), header.begin(), header.end());
    gathered_bytes_ += header.size() + payload.size();
    if (gathered_bytes_ >= gather_bytes) write_gathered();
    return at;
}

std::vector<std::byte> object_writer::read_frame(std::uint64_t pos, std::uint32_t len) {
    check_usable();
    std::vector<std::byte> out(len);
    if (gathered_.empty() && pos >= pos_) {
        std::memcpy(out.data(), buffer_.data() + (pos - pos_), len);
        return out;
    }
    write_gathered();
    sys::pread_exact(fd_.get(), out, pos, shown_);
    return out;
}

void object_writer::finish(object_footer footer) {
    footer.uid = uid_;
    auto body = encode_footer(footer);
    auto footer_pos = bytes_written();
    std::byte tail[object_tail_size];
    store_le<std::uint64_t>(tail, footer_pos);
    store_le<std::uint64_t>(tail + 8, body.size());
    store_le<std::uint64_t>(tail + 16, XXH3_64bits(body.data(), body.size()));
    std::memcpy(tail + 24, tail_magic, 8);
    append(body);
    append({tail, object_tail_size});
    write_gathered();
    sys::fsync_fd(fd_.get(), shown_);
}

void object_writer::publish(int to_dir, const std::string& to_name) {
    sys::rename_at(dirfd_, tmp_name_, to_dir, to_name, 0, shown_);
    has_temporary_name_ = false;
}

void object_writer::publish_linked(int to_dir, const std::string& to_name) {
    sys::link_at(dirfd_, tmp_name_, to_dir, to_name, shown_);
}

void object_writer::drop_temporary_name() {
    if (!has_temporary_name_) return;
    sys::unlink_at(dirfd_, tmp_name_, 0, shown_);
    has_temporary_name_ = false;
}

object_file::object_file(sys::fd f, std::string shown)
    : fd_(std::move(f)), shown_(std::move(shown)) {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) sys::fail("cannot stat", shown_);
    file_size_ = static_cast<std::uint64_t>(st.st_size);
    if (file_size_ < object_header_size + object_tail_size)
        throw corrupt_store(shown_ + ": object truncated");
    std::byte head[object_header_size], tail[object_tail_size];
    sys::pread_exact(fd_.get(), head, 0, shown_);
    sys::pread_exact(fd_.get(), tail, file_size_ - object_tail_size, shown_);
    if (std::memcmp(head, header_magic, 8) != 0 || std::memcmp(tail + 24, tail_magic, 8) != 0)
        throw corrupt_store(shown_ + ": not a tpdefs object (bad magic)");
    auto pos = load_le<std::uint64_t>(tail);
    auto len = load_le<std::uint64_t>(tail + 8);
    // Checked without overflow: a forged offset past the end must not wrap into a length
    // that passes (and sizes the allocation below).
    const auto footer_end = file_size_ - object_tail_size;
    if (pos < object_header_size || pos > footer_end || len != footer_end - pos)
        throw corrupt_store(shown_ + ": object footer out of bounds");
    std::vector<std::byte> body(len);
    sys::pread_exact(fd_.get(), body, pos, shown_);
    if (XXH3_64bits(body.data(), body.size()) != load_le<std::uint64_t>(tail + 16))
        throw corrupt_store(shown_ + ": object footer checksum mismatch");
    footer_ = decode_footer(body, shown_);
    if (footer_.uid != load_le<std::uint64_t>(head + 8))
        throw corrupt_store(shown_ + ": object header and footer disagree");
    for (const auto& b : footer_.blocks) {
        if (b.frame_pos < object_header_size || b.frame_len > pos ||
            b.frame_pos > pos - b.frame_len)
            throw corrupt_store(shown_ + ": block frame out of bounds");
        // Sizes that allocate on read are bounded before anything trusts them.
        if (b.size > max_block_size || b.ref_size > max_block_size)
            throw corrupt_store(shown_ + ": block larger than any the store writes");
    }
}

void object_file::read_frame_into(std::size_t block, std::vector<std::byte>& buf) const {
    const auto& b = footer_.blocks.at(block);
    buf.resize(b.frame_len);
    sys::pread_exact(fd_.get(), buf, b.frame_pos, shown_);
}

std::vector<std::byte> object_file::read_frame(std::size_t block) const {
    const auto& b = footer_.blocks.at(block);
    std::vector<std::byte> out(b.frame_len);
    sys::pread_exact(fd_.get(), out, b.frame_pos, shown_);
    return out;
}

} // namespace tpde::store

#include "tpde/format/stream_segmenter.hpp"

#include <algorithm>
#include <map>
#include <spdlog/spdlog.h>

#include "layouts.hpp"
#include "parse_util.hpp"
#include "pickle_storages.hpp"

namespace tpde::format {

using detail::format_error;
using detail::read_le;

namespace {
constexpr std::uint32_t sig_local = 0x04034b50;
constexpr std::uint32_t sig_central = 0x02014b50;
constexpr std::uint32_t sig_descriptor = 0x08074b50;

} // namespace

struct stream_segmenter::impl {
    enum class state {
        detect,
        zip_header,
        zip_data,
        zip_descriptor,
        zip_directory,
        npy,
        safetensors,
        rest
    };

    stream_options opts;
    state st{state::detect};
    layout_kind kind{layout_kind::generic};
    std::string fallback;
    std::vector<segment> all; // handed out, in order
    std::size_t handed{0};
    std::uint64_t fed{0};
    // Bytes the parser may still need: [buf_start, buf_end()) copied into buf, the rest of
    // [buf_start, fed) read in place from the caller's chunk `in` while feed() runs. Only what
    // the parser still needs after the chunk is copied: tensor data is skipped, not buffered.
    std::vector<std::byte> buf;
    std::uint64_t buf_start{0}; // may lie beyond fed: the parser skips to there
    std::span<const std::byte> in;
    std::uint64_t in_start{0};
    std::uint64_t cursor{0};    // where parsing continues
    std::uint64_t keep_from{0}; // bytes before this are never needed again

    // The zip record being read.
    std::string prefix; // "itemK/" for the K-th archive of a DCP file, "" for the first
    std::size_t archives{0};
    std::string record;
    std::uint64_t data_start{0};
    bool has_descriptor{false};
    bool stored{false};        // method 0: the record's bytes are the data
    std::string record_tensor; // its checkpoint name, if a storage's
    bool need_bytes{false};    // record size unknown: find its descriptor
    std::uint64_t scanned{0};  // bytes of the record already searched for it
    std::map<std::string, detail::storage_info> storages;

    bool have(std::uint64_t at, std::uint64_t n) const {
        return at >= buf_start && at <= fed && fed - at >= n;
    }
    std::uint64_t buf_end() const { return buf_start + buf.size(); }
    // Bytes [at, at+n), which have(at, n) said are there. A range straddling buf and `in`
    // (rare: a header cut by a chunk boundary) copies the rest of `in` into buf, which
    // invalidates spans taken from buf before; after that buf does not grow in this chunk.
    std::span<const std::byte> bytes(std::uint64_t at, std::uint64_t n) {
        if (at >= buf_end())
            return in.subspan(static_cast<std::size_t>(at - in_start), static_cast<std::size_t>(n));
        if (at + n > buf_end()) copy_in_from(buf_end());
        return std::span<const std::byte>(buf).subspan(static_cast<std::size_t>(at - buf_start),
                                                       static_cast<std::size_t>(n));
    }
    std::span<const std::byte> from(std::uint64_t at) { return bytes(at, fed - at); }
    void copy_in_from(std::uint64_t at) { // requires at == buf_end() or buf empty
        if (at >= fed) return;
        if (buf.empty()) buf_start = at;
        buf.insert(buf.end(), in.begin() + static_cast<std::ptrdiff_t>(at - in_start), in.end());
    }

    // Hands out segments contiguously: a gap gets its own segment, named as close_gaps()
    // names it, so what was handed out stays a prefix of the final layout.
    void emit(segment s) {
        if (s.length == 0) return;
        std::uint64_t end = all.empty() ? 0 : all.back().offset + all.back().length;
        if (!all.empty() && all.back().length == open_ended)
            throw format_error("segment after the open end");
        if (s.offset < end) throw format_error("overlapping segments");
        if (s.offset > end)
            all.push_back(
                detail::gap_after(all.empty() ? nullptr : &all.back(), end, s.offset - end));
        all.push_back(std::move(s));
    }
    void emit_rest(const std::string& name) {
        emit({name, cursor, open_ended, {}});
        st = state::rest;
    }
    // Leaves the rest of the file to offset matching. Never throws: it is the error path.
    void give_up(const std::string& why) {
        if (st == state::rest) return; // an open-ended segment already covers the rest
        if (fallback.empty()) fallback = why;
        std::uint64_t end = all.empty() ? 0 : all.back().offset + all.back().length;
        cursor = std::max(cursor, end);
        spdlog::debug("stream segmenter: {} at offset {}; the rest is unparsed", why, cursor);
        all.push_back({"#unparsed@" + std::to_string(cursor), cursor, open_ended, {}});
        st = state::rest;
    }

    // Forgets buffered bytes before `k`.
    void drop_before(std::uint64_t k) {
        if (k <= buf_start) return;
        if (k >= buf_end()) {
            buf.clear();
        } else {
            buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(k - buf_start));
        }
        buf_start = k;
    }
    // Makes `chunk` readable, after dropping what the parser no longer needs.
    void begin_chunk(std::span<const std::byte> chunk) {
        drop_before(keep_from);
        in = chunk;
        in_start = fed;
        fed += chunk.size();
        if (buf.empty()) buf_start = std::max(buf_start, in_start);
    }
    // Copies what of the chunk the parser may still need, before the caller's bytes go away.
    void end_chunk() {
        drop_before(keep_from);
        if (st != state::rest) copy_in_from(std::max(buf_start, buf_end()));
        if (buf.empty()) buf_start = std::max(buf_start, fed);
        in = {};
        in_start = fed;
    }

    // Advances the parser as far as the bytes fed allow.
    void run() {
        try {
            while (step()) {
            }
        } catch (const format_error& e) {
            give_up(e.what());
        }
        if (st != state::rest && fed > buf_start && fed - buf_start > opts.max_lookahead)
            give_up("record larger than the look-ahead");
    }

    bool step() {
        switch (st) {
        case state::detect:
            return detect();
        case state::zip_header:
            return zip_header();
        case state::zip_data:
            return zip_data();
        case state::zip_descriptor:
            return zip_descriptor();
        case state::zip_directory:
            return zip_directory();
        case state::npy:
            return npy();
        case state::safetensors:
            return safetensors();
        case state::rest:
            return false;
        }
        return false;
    }

    bool detect() {
        if (!have(0, 9)) return false;
        auto head = bytes(0, 9);
        if (detail::starts_with(head, "PK\x03\x04")) {
            kind = layout_kind::torch_zip;
            st = state::zip_header;
        } else if (detail::starts_with(head, "\x93NUMPY")) {
            kind = layout_kind::npy;
            st = state::npy;
        } else if (std::to_integer<char>(head[8]) == '{') {
            kind = layout_kind::safetensors;
            st = state::safetensors;
        } else {
            emit({"", 0, open_ended, {}}); // generic: fixed blocks at equal offsets
            st = state::rest;
        }
        return true;
    }

    bool zip_header() {
        if (!have(cursor, 4)) return false;
        auto sig = read_le<std::uint32_t>(bytes(cursor, 4), 0);
        if (sig == sig_central) {
            st = state::zip_directory;
            return true;
        }
        if (sig != sig_local) throw format_error("expected a zip local header");
        if (!have(cursor, 30)) return false;
        auto h = bytes(cursor, 30);
        auto flags = read_le<std::uint16_t>(h, 6);
        auto method = read_le<std::uint16_t>(h, 8);
        std::uint64_t csize = read_le<std::uint32_t>(h, 18);
        std::uint64_t name_len = read_le<std::uint16_t>(h, 26);
        std::uint64_t extra_len = read_le<std::uint16_t>(h, 28);
        if (!have(cursor, 30 + name_len + extra_len)) return false;
        std::string raw_name(detail::as_text(bytes(cursor + 30, name_len)));
        record = detail::record_name_without_root(raw_name);
        if (archives == 0 && kind == layout_kind::torch_zip && record != "data.pkl" && all.empty())
            kind = layout_kind::npz; // numpy's zips have no pickle first
        if (kind == layout_kind::npz) record = raw_name;
        data_start = cursor + 30 + name_len + extra_len;
        has_descriptor = flags & 8;
        stored = method == 0;
        segment data{prefix + record, data_start, 0, {}};
        std::optional<std::uint64_t> size;
        if (!has_descriptor && csize != 0xffffffff) size = csize;
        if (const auto* info = storage_of_record()) {
            if (!size) size = info->bytes;
        }
        describe(data, size);
        emit({prefix + record + "#header",
              cursor,
              data_start - cursor,
              {},
              data.tensor.empty() ? "" : data.tensor + "#header"});
        cursor = data_start;
        if (record == "data.pkl" || !size) {
            // The pickle must be read whole; other records of unknown size are small
            // (version, serialization id): find their end from the data descriptor.
            need_bytes = true;
            keep_from = data_start;
            st = state::zip_data;
            return true;
        }
        data.length = *size;
        emit(data);
        cursor = data_start + *size;
        keep_from = cursor;
        st = has_descriptor ? state::zip_descriptor : state::zip_header;
        return true;
    }

    // A record whose size only its data descriptor tells: find "PK\7\8" whose size field
    // matches the distance from the data's start.
    bool zip_data() {
        if (!have(data_start, 0)) return false;
        auto text = detail::as_text(from(data_start));
        const char pat[4] = {'P', 'K', 7, 8};
        for (auto p = text.find(std::string_view(pat, 4), scanned); p != std::string_view::npos;
             p = text.find(std::string_view(pat, 4), p + 1)) {
            if (p + 24 > text.size()) {
                scanned = p; // wait for the whole descriptor
                return false;
            }
            auto d = from(data_start + p);
            bool zip64 = read_le<std::uint64_t>(d, 8) == p;
            bool zip32 = read_le<std::uint32_t>(d, 8) == p;
            if (!zip64 && !zip32) continue;
            finish_record(p);
            return true;
        }
        scanned = text.size() > 3 ? text.size() - 3 : 0;
        return false;
    }

    // What the pickle says of the record being read, if it is a stored storage.
    const detail::storage_info* storage_of_record() const {
        if (!stored || !record.starts_with("data/")) return nullptr;
        auto it = storages.find(record.substr(5));
        return it == storages.end() ? nullptr : &it->second;
    }
    // Type, checkpoint name and row size of a storage's record, as torch_zip_layout gives
    // them (so the two layouts agree).
    void describe(segment& data, std::optional<std::uint64_t> size) {
        const auto* info = storage_of_record();
        record_tensor.clear();
        if (!info) return;
        data.type = info->type;
        if (!info->name.empty()) data.tensor = record_tensor = prefix + info->name;
        if (size && info->bytes == size) data.row_bytes = info->row_bytes;
    }

    void finish_record(std::uint64_t size) {
        segment data{prefix + record, data_start, size, {}};
        describe(data, size);
        if (record == "data.pkl") {
            try {
                storages = detail::storage_types(bytes(data_start, size));
            } catch (const format_error& e) {
                storages.clear(); // tensors stay segments, of unknown type and found by descriptor
                spdlog::debug("stream segmenter: pickle not understood ({})", e.what());
            }
        }
        emit(data);
        cursor = data_start + size;
        keep_from = cursor;
        need_bytes = false;
        scanned = 0;
        st = has_descriptor ? state::zip_descriptor : state::zip_header;
    }

    bool zip_descriptor() {
        // "PK\7\8", crc, sizes of 4 or 8 bytes each: tell the two apart by what follows.
        if (!have(cursor, 28)) return false;
        auto d = bytes(cursor, 28);
        if (read_le<std::uint32_t>(d, 0) != sig_descriptor)
            throw format_error("data descriptor without signature");
        auto next_is_pk = [&](std::uint64_t at) { return read_le<std::uint16_t>(d, at) == 0x4b50; };
        std::uint64_t len = next_is_pk(24) ? 24 : next_is_pk(16) ? 16 : 0;
        if (!len) throw format_error("data descriptor not followed by a zip header");
        emit({prefix + record + "#after",
              cursor,
              len,
              {},
              record_tensor.empty() ? "" : record_tensor + "#after"});
        cursor += len;
        keep_from = cursor;
        st = state::zip_header;
        return true;
    }

    // The central directory runs to the end-of-central-directory record; another archive may
    // follow it (torch.distributed.checkpoint concatenates one per item).
    bool zip_directory() {
        if (!have(cursor, 0)) return false;
        auto text = detail::as_text(from(cursor));
        const char pat[4] = {'P', 'K', 5, 6};
        auto p = text.find(std::string_view(pat, 4));
        if (p == std::string_view::npos || p + 22 > text.size()) return false;
        auto comment = read_le<std::uint16_t>(from(cursor + p), 20);
        std::uint64_t end = cursor + p + 22 + comment;
        if (!have(end, 4)) return false; // wait: end of file (finish) or another archive
        emit({prefix + "#directory", cursor, end - cursor, {}});
        cursor = end;
        keep_from = cursor;
        if (read_le<std::uint32_t>(bytes(end, 4), 0) != sig_local)
            throw format_error("bytes after a zip archive");
        kind = layout_kind::distcp;
        prefix = "item" + std::to_string(++archives) + "/";
        storages.clear();
        st = state::zip_header;
        return true;
    }

    bool npy() {
        if (!have(0, 12)) return false;
        auto head = bytes(0, 12);
        std::uint64_t len = head[6] == std::byte{1}
                                ? 10 + read_le<std::uint16_t>(head, 8)
                                : 12 + std::uint64_t{read_le<std::uint32_t>(head, 8)};
        if (len > opts.max_lookahead) throw format_error("npy header too long");
        if (!have(0, len)) return false;
        auto [header, type] = detail::npy_header(bytes(0, len));
        emit({"#header", 0, header, {}});
        cursor = header;
        emit({"data", header, open_ended, type});
        st = state::rest;
        return true;
    }

    bool safetensors() {
        if (!have(0, 8)) return false;
        auto n = read_le<std::uint64_t>(bytes(0, 8), 0);
        if (n > opts.max_lookahead) throw format_error("safetensors header too long");
        if (!have(0, 8 + n)) return false;
        auto l = detail::safetensors_header_layout(bytes(0, 8 + n));
        for (auto& s : l.segments) emit(s);
        cursor = l.segments.empty() ? 0 : l.segments.back().offset + l.segments.back().length;
        keep_from = cursor;
        emit_rest("#tail");
        return true;
    }
};

stream_segmenter::stream_segmenter(stream_options opts) : p_(std::make_unique<impl>()) {
    p_->opts = opts;
}
stream_segmenter::~stream_segmenter() = default;

std::vector<segment> stream_segmenter::feed(std::span<const std::byte> bytes) {
    p_->begin_chunk(bytes);
    p_->run();
    p_->end_chunk();
    std::vector<segment> out(p_->all.begin() + static_cast<std::ptrdiff_t>(p_->handed),
                             p_->all.end());
    p_->handed = p_->all.size();
    return out;
}

file_layout stream_segmenter::finish() {
    auto& p = *p_;
    p.run();
    try {
        if (p.st == impl::state::detect) {
            p.emit({"", 0, open_ended, {}});
        } else if (p.st == impl::state::zip_directory && p.have(p.cursor, 0)) {
            p.emit({p.prefix + "#directory", p.cursor, open_ended, {}}); // ends the file
        } else if (p.st != impl::state::rest && (p.cursor < p.fed || p.need_bytes)) {
            p.give_up("file ends inside a record");
        }
    } catch (const format_error& e) {
        p.give_up(e.what());
    }
    file_layout l;
    l.kind = p.kind; // the recognised kind, even where parsing stopped early
    l.fallback_reason = p.fallback;
    for (auto s : p.all) {
        if (s.offset >= p.fed) break;
        if (s.length == open_ended || s.length > p.fed - s.offset) s.length = p.fed - s.offset;
        l.segments.push_back(std::move(s));
    }
    try {
        detail::close_gaps(l, p.fed);
    } catch (const format_error& e) {
        l = generic_layout(p.fed);
        l.fallback_reason = e.what();
    }
    return l;
}

} // namespace tpde::format

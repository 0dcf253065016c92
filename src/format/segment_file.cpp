#include <spdlog/spdlog.h>

#include "layouts.hpp"
#include "parse_util.hpp"

namespace tpde::format {

const char* name_of(layout_kind k) {
    switch (k) {
    case layout_kind::generic:
        return "generic";
    case layout_kind::torch_zip:
        return "torch-zip";
    case layout_kind::safetensors:
        return "safetensors";
    case layout_kind::npy:
        return "npy";
    case layout_kind::npz:
        return "npz";
    case layout_kind::distcp:
        return "distcp";
    }
    return "?";
}

namespace detail {

segment gap_after(const segment* prev, std::uint64_t offset, std::uint64_t length) {
    if (!prev) return {"#start#after", offset, length, {}};
    return {prev->name + "#after",
            offset,
            length,
            {},
            prev->tensor.empty() ? "" : prev->tensor + "#after"};
}

void close_gaps(file_layout& layout, std::uint64_t size) {
    auto& segs = layout.segments;
    std::stable_sort(segs.begin(), segs.end(),
                     [](const segment& a, const segment& b) { return a.offset < b.offset; });
    std::vector<segment> out;
    out.reserve(segs.size() * 2 + 1);
    std::uint64_t at = 0;
    for (auto& s : segs) {
        if (s.length == 0) continue;
        if (s.offset < at) throw format_error("overlapping segments");
        if (s.offset > size || size - s.offset < s.length)
            throw format_error("segment past end of file");
        if (s.offset > at)
            out.push_back(gap_after(out.empty() ? nullptr : &out.back(), at, s.offset - at));
        at = s.offset + s.length;
        out.push_back(std::move(s));
    }
    if (at < size) out.push_back({"#tail", at, size - at, {}});
    segs = std::move(out);
}

} // namespace detail

file_layout generic_layout(std::uint64_t size) {
    file_layout l;
    if (size) l.segments.push_back({"", 0, size, {}});
    return l;
}

namespace {

using parser = file_layout (*)(std::span<const std::byte>);

// Which parsers to try, from the first bytes; the first that accepts the file wins.
std::vector<parser> candidates(std::span<const std::byte> b) {
    using namespace detail;
    if (starts_with(b, "PK\x03\x04")) return {torch_zip_layout, npz_layout, distcp_layout};
    if (starts_with(b, "\x93NUMPY")) return {npy_layout};
    if (b.size() >= 9 && std::to_integer<char>(b[8]) == '{') return {safetensors_layout};
    return {};
}

} // namespace

file_layout segment_file(std::span<const std::byte> bytes) {
    std::string reasons;
    for (auto parse : candidates(bytes)) {
        try {
            return parse(bytes);
        } catch (const detail::format_error& e) {
            reasons += reasons.empty() ? e.what() : std::string("; ") + e.what();
        } catch (const std::exception& e) { // bad_alloc from a lying header must not escape
            reasons += reasons.empty() ? e.what() : std::string("; ") + e.what();
        }
    }
    auto l = generic_layout(bytes.size());
    if (!reasons.empty()) {
        spdlog::debug("segmenter: falling back to fixed blocks: {}", reasons);
        l.fallback_reason = std::move(reasons);
    }
    return l;
}

} // namespace tpde::format

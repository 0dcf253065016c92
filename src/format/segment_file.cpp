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

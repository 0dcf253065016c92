// numpy .npy (magic, version, header dict with 'descr') and .npz (a zip of .npy members).
#include <algorithm>

#include "layouts.hpp"
#include "parse_util.hpp"

namespace tpde::format::detail {
namespace {

std::optional<codec::element_type> type_of_descr(std::string_view d) {
    // Little-endian or byte-order-free descriptors only; others are left to the probe.
    if (d == "<f4") return codec::element_type::f32;
    if (d == "<f2") return codec::element_type::f16;
    if (d == "<f8") return codec::element_type::f64;
    if (d == "|u1" || d == "|i1" || d == "|b1") return codec::element_type::bytes;
    return std::nullopt;
}

} // namespace

std::pair<std::uint64_t, std::optional<codec::element_type>>
npy_header(std::span<const std::byte> b) {
    if (!starts_with(b, "\x93NUMPY")) throw format_error("not an npy file");
    auto major = std::to_integer<std::uint8_t>(sub(b, 6, 1)[0]);
    std::uint64_t len, start;
    if (major == 1) {
        len = read_le<std::uint16_t>(b, 8), start = 10;
    } else if (major == 2 || major == 3) {
        len = read_le<std::uint32_t>(b, 8), start = 12;
    } else {
        throw format_error("unknown npy version");
    }
    auto dict = as_text(sub(b, start, len));
    auto key = dict.find("'descr'");
    std::optional<codec::element_type> type;
    if (key != std::string_view::npos) {
        auto q1 = dict.find('\'', key + 7);
        auto q2 = q1 == std::string_view::npos ? q1 : dict.find('\'', q1 + 1);
        if (q2 != std::string_view::npos) type = type_of_descr(dict.substr(q1 + 1, q2 - q1 - 1));
    }
    return {start + len, type};
}

file_layout npy_layout(std::span<const std::byte> file) {
    auto [header, type] = npy_header(file);
    file_layout l;
    l.kind = layout_kind::npy;
    l.segments.push_back({"#header", 0, header, {}});
    l.segments.push_back({"data", header, file.size() - header, type});
    close_gaps(l, file.size());
    return l;
}

file_layout npz_layout(std::span<const std::byte> file) {
    auto z = read_zip_at(file, find_last_eocd(file));
    if (z.start != 0) throw format_error("zip does not start at the beginning of the file");
    file_layout l;
    l.kind = layout_kind::npz;
    for (const auto& e : z.entries) {
        l.segments.push_back(
            {e.name + "#header", e.header_offset, e.data_offset - e.header_offset, {}});
        auto member = sub(file, e.data_offset, e.size);
        if (e.method == 0 && starts_with(member, "\x93NUMPY")) {
            auto [header, type] = npy_header(member);
            header = std::min<std::uint64_t>(header, e.size);
            l.segments.push_back({e.name + "#npy", e.data_offset, header, {}});
            l.segments.push_back({e.name, e.data_offset + header, e.size - header, type});
        } else {
            l.segments.push_back({e.name, e.data_offset, e.size, {}}); // deflated: opaque bytes
        }
    }
    l.segments.push_back({"#directory", z.cd_offset, z.end - z.cd_offset, {}});
    close_gaps(l, file.size());
    return l;
}

} // namespace tpde::format::detail

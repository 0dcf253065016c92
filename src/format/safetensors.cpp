// safetensors: u64 header length, JSON header, tensor data at offsets relative to its end.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "layouts.hpp"
#include "parse_util.hpp"

namespace tpde::format::detail {
namespace {

constexpr std::uint64_t max_header = 100u << 20; // the reference implementation's own limit

std::optional<codec::element_type> type_of_dtype(const std::string& d) {
    if (d == "F32") return codec::element_type::f32;
    if (d == "BF16") return codec::element_type::bf16;
    if (d == "F16") return codec::element_type::f16;
    if (d == "F64") return codec::element_type::f64;
    if (d == "U8" || d == "I8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2")
        return codec::element_type::bytes;
    return std::nullopt;
}

} // namespace

file_layout safetensors_header_layout(std::span<const std::byte> head) {
    auto n = read_le<std::uint64_t>(head, 0);
    if (n < 2 || n > max_header || n > head.size() - 8)
        throw format_error("safetensors header length out of range");
    auto text = as_text(sub(head, 8, n));
    if (text.front() != '{') throw format_error("safetensors header is not a JSON object");
    nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
    if (header.is_discarded() || !header.is_object())
        throw format_error("safetensors header is not valid JSON");
    const std::uint64_t data_start = 8 + n;
    file_layout l;
    l.kind = layout_kind::safetensors;
    l.segments.push_back({"#header", 0, data_start, {}});
    for (auto& [name, info] : header.items()) {
        if (name == "__metadata__") continue;
        if (!info.is_object() || !info.contains("dtype") || !info.contains("data_offsets"))
            throw format_error("safetensors entry without dtype or offsets");
        const auto& offs = info["data_offsets"];
        if (!info["dtype"].is_string() || !offs.is_array() || offs.size() != 2 ||
            !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
            throw format_error("malformed safetensors entry");
        auto begin = offs[0].get<std::uint64_t>();
        auto end = offs[1].get<std::uint64_t>();
        if (begin > end || end > (std::uint64_t{1} << 56))
            throw format_error("safetensors tensor offsets out of range");
        l.segments.push_back({name, data_start + begin, end - begin,
                              type_of_dtype(info["dtype"].get<std::string>())});
    }
    std::sort(l.segments.begin(), l.segments.end(),
              [](const segment& a, const segment& b) { return a.offset < b.offset; });
    for (std::size_t i = 1; i < l.segments.size(); ++i)
        if (l.segments[i].offset < l.segments[i - 1].offset + l.segments[i - 1].length)
            throw format_error("overlapping safetensors tensors");
    return l;
}

file_layout safetensors_layout(std::span<const std::byte> file) {
    auto l = safetensors_header_layout(file);
    const auto& last = l.segments.back();
    if (last.offset + last.length > file.size())
        throw format_error("safetensors tensor past end of file");
    close_gaps(l, file.size());
    return l;
}

} // namespace tpde::format::detail

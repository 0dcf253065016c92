// safetensors: u64 header length, JSON header, tensor data at offsets relative to its end.
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

file_layout safetensors_layout(std::span<const std::byte> file) {
    auto n = read_le<std::uint64_t>(file, 0);
    if (n < 2 || n > max_header || n > file.size() - 8)
        throw format_error("safetensors header length out of range");
    auto text = as_text(sub(file, 8, n));
    if (text.front() != '{') throw format_error("safetensors header is not a JSON object");
    nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
    if (header.is_discarded() || !header.is_object())
        throw format_error("safetensors header is not valid JSON");
    const std::uint64_t data_start = 8 + n;
    const std::uint64_t data_size = file.size() - data_start;
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
        if (begin > end || end > data_size)
            throw format_error("safetensors tensor past end of file");
        l.segments.push_back({name, data_start + begin, end - begin,
                              type_of_dtype(info["dtype"].get<std::string>())});
    }
    close_gaps(l, file.size()); // also rejects overlapping tensors
    return l;
}

} // namespace tpde::format::detail

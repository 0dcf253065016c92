#pragma once
// Element types the codec distinguishes. The type decides the element width and where the
// exponent sits, which is the context the residual coder conditions on.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tpde::codec {

enum class element_type : std::uint8_t {
    bytes = 0, // width 1, no exponent (int8, uint8, text, anything)
    f16 = 1,   // IEEE half: 5-bit exponent
    bf16 = 2,  // bfloat16: 8-bit exponent
    f32 = 3,
    f64 = 4,
};

inline constexpr std::size_t element_type_count = 5;

constexpr std::size_t width_of(element_type t) {
    switch (t) {
    case element_type::bytes:
        return 1;
    case element_type::f16:
    case element_type::bf16:
        return 2;
    case element_type::f32:
        return 4;
    case element_type::f64:
        return 8;
    }
    return 1;
}

// The default type of a width when only the width is known (bf16 is the common 2-byte type
// in training; f16 must be asked for by name).
std::optional<element_type> element_type_for_width(std::size_t width);
std::string_view name_of(element_type t);
std::optional<element_type> element_type_from_name(std::string_view name);
bool is_valid(std::uint8_t raw_type);

} // namespace tpde::codec

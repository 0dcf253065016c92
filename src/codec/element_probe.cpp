#include "element_probe.hpp"

#include <array>
#include <cmath>

#include "rans.hpp"
#include "residual.hpp"

namespace tpde::codec {

std::optional<element_type> element_type_for_width(std::size_t width) {
    switch (width) {
    case 1:
        return element_type::bytes;
    case 2:
        return element_type::bf16;
    case 4:
        return element_type::f32;
    case 8:
        return element_type::f64;
    default:
        return std::nullopt;
    }
}

namespace {
constexpr std::array<std::string_view, element_type_count> names = {"bytes", "f16", "bf16", "f32",
                                                                    "f64"};
}

std::string_view name_of(element_type t) {
    return names[static_cast<std::size_t>(t)];
}

std::optional<element_type> element_type_from_name(std::string_view name) {
    for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == name) return static_cast<element_type>(i);
    return std::nullopt;
}

bool is_valid(std::uint8_t raw_type) {
    return raw_type < element_type_count;
}

namespace detail {
namespace {

// Small against a block: the probe runs the residual model once per candidate type.
constexpr std::size_t sample_bytes = 4 << 10;

// Order-0 entropy of the byte planes a width would produce.
double plane_bits(std::span<const std::byte> s, std::size_t w) {
    double bits = 0;
    for (std::size_t b = 0; b < w; ++b) {
        std::array<std::uint32_t, 256> h{};
        for (std::size_t i = b; i < s.size(); i += w) ++h[std::to_integer<std::uint8_t>(s[i])];
        bits += entropy_bits(h);
    }
    return bits;
}

} // namespace

element_type probe_element_type(std::span<const std::byte> block,
                                std::span<const std::byte> reference) {
    if (reference.size() < block.size()) reference = {};
    std::size_t start =
        block.size() > sample_bytes ? (((block.size() - sample_bytes) / 2) & ~std::size_t{63}) : 0;
    auto sample = block.subspan(start, std::min(sample_bytes, block.size()));
    if (reference.empty()) {
        element_type best = element_type::bytes;
        double best_bits = plane_bits(sample, 1);
        for (auto t : {element_type::bf16, element_type::f32}) {
            double b = plane_bits(sample, width_of(t));
            if (b < best_bits * 0.99) {
                best = t;
                best_bits = b;
            }
        }
        return best;
    }
    auto ref = reference.subspan(start, sample.size());
    element_type best = element_type::bytes;
    double best_bits = estimate_delta_bits(best, sample, ref);
    // f16 and f64 are rare in training checkpoints and must be named by the caller.
    for (auto t : {element_type::f32, element_type::bf16}) {
        double b = estimate_delta_bits(t, sample, ref);
        if (b < best_bits * 0.99) {
            best = t;
            best_bits = b;
        }
    }
    return best;
}

} // namespace detail
} // namespace tpde::codec

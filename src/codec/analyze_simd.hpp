#pragma once
// AVX-512 form of the encoder's first pass over f32, bf16 and f16 elements (see analyze() in
// residual.cpp): 16 residuals, symbols and contexts at a time; a round's raw bits go to the
// bit writer in four writes. Produces exactly what the scalar pass produces.
#include <cstddef>
#include <cstdint>

#include "bit_io.hpp"

namespace tpde::codec::detail {

struct analyze_input {
    const std::byte* block;
    const std::byte* ref;
    int context_base;   // exponent e has context clamp(e - context_base, 0, 15)
    unsigned exp_shift; // an element's exponent: (element >> exp_shift) & exp_mask
    std::uint32_t exp_mask;
    std::uint16_t* symbols; // context * max_symbols + symbol, per element
    std::uint32_t* counts;  // histogram over the same index
};

struct analyze_totals {
    std::uint64_t changed{0};
    std::uint64_t raw_bits{0};
};

// Elements [0, 16 * rounds) of `width`-byte floats (4: f32, 2: bf16 or f16). Needs
// have_avx512().
analyze_totals analyze_rounds_avx512(const analyze_input& in, unsigned width, std::size_t rounds,
                                     bit_writer& raw);

// The largest finite exponent among `n` `width`-byte floats (4: f32; 2: bf16, or f16 with
// `exp_bits` 5) whose exponent of `exp_bits` bits ends below the sign of their top 16 bits;
// 0 if none. Needs have_avx512().
unsigned top_exponent_avx512(const std::byte* p, std::size_t n, unsigned width, unsigned exp_bits);

} // namespace tpde::codec::detail

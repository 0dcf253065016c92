#pragma once
// AVX-512 rANS with 16 lanes. Decoding of f32, bf16 and f16 residual sections: all 16 states step
// at once (table lookups by gather, renormalisation words by an expanding load), the raw
// bits of the 16 elements are found by a prefix sum of their lengths and read by gather, and
// the elements are rebuilt from their references in the same registers. Produces exactly
// what the scalar loop produces (same states, same stream positions), so either may finish
// what the other started. Used only where the CPU has AVX-512 (checked at run time).
#include <cstddef>
#include <cstdint>

namespace tpde::codec::detail {

// Whether the AVX-512 paths (decode_rounds_avx512, analyze_rounds_avx512) run: the CPU has
// AVX-512 and no test turned them off.
bool have_avx512();
// Tests turn the vector paths off to compare them with the scalar ones.
void set_avx512_allowed(bool allowed);
// Whether the decoder's AVX512-VBMI variant runs (have_avx512(), the CPU has VBMI, and no
// test turned it off), and the switch tests use to compare it with the gather variant.
bool have_vbmi();
void set_vbmi_allowed(bool allowed);

struct round_input {
    std::uint32_t* states;                 // 16 lanes, updated
    const std::byte** rans_cursor;         // updated
    const std::byte* rans_end;             // rounds stop once the cursor passes it
    const std::byte* bits;                 // raw-bit stream (padded)
    std::uint64_t* bit_pos;                // updated
    std::uint64_t bit_end;                 // rounds stop once the position passes it
    const std::uint32_t* tables;           // 17 decode tables of prob_scale slots, back to back
    const std::uint32_t* table_of_context; // 16 entries: table index per context
    int context_base;   // exponent e has context clamp(e - context_base, 0, 15), as context_map
    unsigned exp_shift; // an element's exponent: (element >> exp_shift) & exp_mask
    std::uint32_t exp_mask;
    const std::byte* ref;
    std::byte* out;
    std::size_t elements;             // in ref and out
    const std::uint32_t* positions{}; // sparse: the element of each coded residual
};

// Decodes coded residuals [k, k + 16 * rounds) of a section of `width`-byte floats (4: f32,
// 2: bf16 or f16) as rounds of 16 into `out`; returns the rounds done (fewer if a stream ran past
// its end: the caller's bounds checks then report it). Sets `bad` if a lane decoded a symbol
// no table may produce.
std::size_t decode_rounds_avx512(const round_input& in, unsigned width, bool sparse, std::size_t k,
                                 std::size_t rounds, bool& bad);

// decode_rounds_avx512's variant for CPUs with AVX512-VBMI; it calls this itself.
std::size_t decode_rounds_avx512_vbmi(const round_input& in, unsigned width, bool sparse,
                                      std::size_t k, std::size_t rounds, bool& bad);

// dec_table::init's loop for a used context (frequencies summing to prob_scale), 16 slots per
// store: the scalar loop's per-symbol overhead made building the tables ~8% of a bf16
// decode, whose blocks are small.
void fill_dec_table_avx512(const std::uint16_t* freqs, std::uint32_t* slots);

struct enc_symbol;

// The encoder's side: rounds [0, rounds) of 16 coded symbols (context * max_symbols + symbol,
// indices into `flat`), the last round first, exactly as rans_encoder::put would do them one
// by one from the end: the same words before `cursor` (moved down), the same 16 states.
void encode_rounds_avx512(std::uint32_t* states, std::uint16_t*& cursor, const enc_symbol* flat,
                          const std::uint16_t* symbols, std::size_t rounds);

} // namespace tpde::codec::detail

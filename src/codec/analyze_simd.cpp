#include "analyze_simd.hpp"

#include <algorithm>
#include <cstring>

#include "avx512.hpp"
#include "rans.hpp"

namespace tpde::codec::detail {

#if defined(__x86_64__)

namespace {

using avx512::ordered;

template <unsigned Width>
TPDE_AVX512 inline __m512i load(const std::byte* p, std::size_t i) {
    if constexpr (Width == 4) return _mm512_loadu_si512(p + 4 * i);
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * i)));
}

// A round's raw bits (16 fields, element 0's lowest) joined in vector registers into four
// pieces, one bit_writer call each (the calls chain on the writer's position, so fewer is
// faster): of <= 56 bits where fields have <= 14 bits (bf16), else of <= 120.
template <unsigned Width>
TPDE_AVX512 inline void put_raw_bits(__m512i v, __m512i len, bit_writer& raw) {
    const __m512i lo32 = _mm512_set1_epi64(0xffffffff);
    // 64-bit lane k: field 2k+1 above field 2k (<= 60 bits)
    const __m512i len_even = _mm512_and_si512(len, lo32);
    const __m512i pair = _mm512_or_si512(_mm512_and_si512(v, lo32),
                                         _mm512_sllv_epi64(_mm512_srli_epi64(v, 32), len_even));
    const __m512i pair_len = _mm512_add_epi64(len_even, _mm512_srli_epi64(len, 32));
    // lane 2j: pair 2j+1 above pair 2j; with wide fields, what passes bit 63 in `spill`
    const __m512i next = _mm512_bsrli_epi128(pair, 8);
    const __m512i joined = _mm512_or_si512(pair, _mm512_sllv_epi64(next, pair_len));
    const __m512i joined_len = _mm512_add_epi64(pair_len, _mm512_bsrli_epi128(pair_len, 8));
    alignas(64) std::uint64_t piece[8], bits[8];
    _mm512_store_si512(piece, joined);
    _mm512_store_si512(bits, joined_len);
    if constexpr (Width == 2) {
        for (int j = 0; j < 8; j += 2) raw.put(piece[j], static_cast<unsigned>(bits[j]));
    } else {
        alignas(64) std::uint64_t spill[8];
        // vpsrlvq gives 0 for a shift of 64 (an empty pair 2j)
        _mm512_store_si512(
            spill, _mm512_srlv_epi64(next, _mm512_sub_epi64(_mm512_set1_epi64(64), pair_len)));
        for (int j = 0; j < 8; j += 2)
            raw.put128((u128{spill[j]} << 64) | piece[j], static_cast<unsigned>(bits[j]));
    }
}

template <unsigned Width>
TPDE_AVX512 analyze_totals rounds(const analyze_input& in, std::size_t rounds, bit_writer& raw) {
    constexpr unsigned bits = 8 * Width;
    const __m128i exp_shift = _mm_cvtsi32_si128(static_cast<int>(in.exp_shift));
    const __m512i exp_mask = _mm512_set1_epi32(static_cast<int>(in.exp_mask));
    const __m512i zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i two = _mm512_set1_epi32(2);
    const __m512i base = _mm512_set1_epi32(in.context_base);
    const __m512i fifteen = _mm512_set1_epi32(max_contexts - 1);
    analyze_totals t;
    alignas(64) std::uint32_t index[16];
    for (std::size_t r = 0, i = 0; r < rounds; ++r, i += 16) {
        const __m512i ref = load<Width>(in.ref, i);
        // zigzag of the difference of the order-preserving integers, modulo 2^bits
        __m512i d = _mm512_sub_epi32(ordered<Width>(load<Width>(in.block, i)), ordered<Width>(ref));
        d = _mm512_slli_epi32(d, 32 - bits); // the residual in the top bits
        __m512i z = _mm512_xor_si512(_mm512_slli_epi32(d, 1), _mm512_srai_epi32(d, 31));
        z = _mm512_srli_epi32(z, 32 - bits);
        // symbol: 0, 1, or 2*(n-1) + the bit below the leading one; n-2 raw bits
        const __m512i n = _mm512_sub_epi32(_mm512_set1_epi32(32), _mm512_lzcnt_epi32(z));
        const __m512i nraw = _mm512_sub_epi32(_mm512_max_epu32(n, two), two);
        const __m512i below = _mm512_and_si512(_mm512_srlv_epi32(z, nraw), one);
        const __mmask16 big = _mm512_cmpge_epu32_mask(n, two);
        const __m512i s =
            _mm512_mask_add_epi32(n, big, n, _mm512_add_epi32(_mm512_sub_epi32(n, two), below));
        __m512i c =
            _mm512_sub_epi32(_mm512_and_si512(_mm512_srl_epi32(ref, exp_shift), exp_mask), base);
        c = _mm512_min_epi32(_mm512_max_epi32(c, zero), fifteen);
        const __m512i cs = _mm512_add_epi32(_mm512_slli_epi32(c, 7), s); // max_symbols = 128
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(in.symbols + i), _mm512_cvtepi32_epi16(cs));
        t.changed += static_cast<unsigned>(__builtin_popcount(_mm512_cmpneq_epi32_mask(s, zero)));
        t.raw_bits += static_cast<std::uint32_t>(_mm512_reduce_add_epi32(nraw));
        const __m512i v = _mm512_and_si512(z, _mm512_sub_epi32(_mm512_sllv_epi32(one, nraw), one));
        put_raw_bits<Width>(v, nraw, raw);
        _mm512_store_si512(index, cs);
        for (int l = 0; l < 16; ++l) ++in.counts[index[l]];
    }
    return t;
}

template <unsigned Width>
TPDE_AVX512 unsigned top_exponent(const std::byte* p, std::size_t n, unsigned exp_bits) {
    // 16-bit lanes for both widths: an f32's exponent sits in its upper half (bits 7..14),
    // where a bf16's is, and an f16's in bits 10..14; the lower halves of f32s are masked off.
    constexpr unsigned per_vector = 64 / Width;
    const unsigned shift = 15 - exp_bits;
    const auto all_ones = static_cast<std::uint16_t>((1u << exp_bits) - 1);
    const __m512i ff = _mm512_set1_epi16(static_cast<short>(all_ones));
    const __m128i shift_v = _mm_cvtsi32_si128(static_cast<int>(shift));
    constexpr __mmask32 lanes = Width == 4 ? 0xaaaaaaaa : 0xffffffff;
    __m512i top = _mm512_setzero_si512();
    std::size_t i = 0;
    for (; i + per_vector <= n; i += per_vector) {
        __m512i e =
            _mm512_and_si512(_mm512_srl_epi16(_mm512_loadu_si512(p + i * Width), shift_v), ff);
        // infinities and NaNs (exponent all ones) do not count
        top = _mm512_mask_max_epu16(top, _mm512_mask_cmpneq_epu16_mask(lanes, e, ff), top, e);
    }
    alignas(64) std::uint16_t t[32];
    _mm512_store_si512(t, top);
    unsigned r = 0;
    for (auto v : t) r = std::max<unsigned>(r, v);
    for (; i < n; ++i) {
        std::uint16_t hi;
        std::memcpy(&hi, p + i * Width + Width - 2, 2);
        unsigned e = (hi >> shift) & all_ones;
        if (e != all_ones) r = std::max(r, e);
    }
    return r;
}

} // namespace

unsigned top_exponent_avx512(const std::byte* p, std::size_t n, unsigned width, unsigned exp_bits) {
    return width == 4 ? top_exponent<4>(p, n, exp_bits) : top_exponent<2>(p, n, exp_bits);
}

analyze_totals analyze_rounds_avx512(const analyze_input& in, unsigned width, std::size_t n,
                                     bit_writer& raw) {
    return width == 4 ? rounds<4>(in, n, raw) : rounds<2>(in, n, raw);
}

#else

unsigned top_exponent_avx512(const std::byte*, std::size_t, unsigned, unsigned) {
    return 0;
}

analyze_totals analyze_rounds_avx512(const analyze_input&, unsigned, std::size_t, bit_writer&) {
    return {};
}

#endif

} // namespace tpde::codec::detail

#include "rans_simd.hpp"

#include <atomic>
#include <cstddef>
#include <cstring>

#include "avx512.hpp"
#include "rans.hpp"

namespace tpde::codec::detail {

#if defined(__x86_64__)

namespace {
std::atomic<bool> avx512_allowed{true};
}

void set_avx512_allowed(bool allowed) {
    avx512_allowed = allowed;
}

bool have_avx512() {
    // avx512cd: the encoder's bit widths (vplzcntd)
    static const bool cpu =
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd");
    return cpu && avx512_allowed.load(std::memory_order_relaxed);
}

using avx512::ordered;

// `nraw` bits at each of 8 bit positions (byte, shift) of the stream, as 8 x u32.
TPDE_AVX512 static inline __m256i raw_bits_of_8(const std::byte* bits, __m256i byte_at,
                                                __m256i shift, __m256i nraw) {
    const __m512i one = _mm512_set1_epi64(1);
    __m512i w = _mm512_i32gather_epi64(byte_at, bits, 1);
    w = _mm512_srlv_epi64(w, _mm512_cvtepu32_epi64(shift));
    const __m512i mask = _mm512_sub_epi64(_mm512_sllv_epi64(one, _mm512_cvtepu32_epi64(nraw)), one);
    return _mm512_cvtepi64_epi32(_mm512_and_si512(w, mask));
}

// The reference elements of one round (zero-extended to 32 bits) and where they are.
template <unsigned Width, bool Sparse>
TPDE_AVX512 static inline __m512i load_refs(const round_input& in, std::size_t k, __m512i at) {
    if constexpr (!Sparse) {
        if constexpr (Width == 4) return _mm512_loadu_si512(in.ref + 4 * k);
        return _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.ref + 2 * k)));
    } else if constexpr (Width == 4) {
        return _mm512_i32gather_epi32(at, in.ref, 4);
    } else {
        // A 4-byte gather at the last element would read past the reference: that lane is
        // loaded on its own.
        const auto last = static_cast<int>(in.elements - 1);
        const __mmask16 inside = _mm512_cmplt_epi32_mask(at, _mm512_set1_epi32(last));
        __m512i r = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), inside, at, in.ref, 2);
        r = _mm512_and_si512(r, _mm512_set1_epi32(0xffff));
        if (inside != 0xffff) {
            std::uint16_t v;
            std::memcpy(&v, in.ref + 2 * in.elements - 2, 2);
            r = _mm512_mask_mov_epi32(r, static_cast<__mmask16>(~inside), _mm512_set1_epi32(v));
        }
        return r;
    }
}

template <unsigned Width, bool Sparse>
TPDE_AVX512 static inline void store_elements(const round_input& in, std::size_t k, __m512i at,
                                              __m512i v) {
    if constexpr (!Sparse) {
        if constexpr (Width == 4)
            _mm512_storeu_si512(in.out + 4 * k, v);
        else
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(in.out + 2 * k),
                                _mm512_cvtepi32_epi16(v));
    } else if constexpr (Width == 4) {
        _mm512_i32scatter_epi32(in.out, at, v, 4);
    } else { // no 16-bit scatter
        alignas(64) std::uint32_t where[16], what[16];
        _mm512_store_si512(where, at);
        _mm512_store_si512(what, v);
        for (int l = 0; l < 16; ++l) {
            auto h = static_cast<std::uint16_t>(what[l]);
            std::memcpy(in.out + 2 * std::size_t{where[l]}, &h, 2);
        }
    }
}

template <unsigned Width, bool Sparse>
TPDE_AVX512 static std::size_t decode_rounds(const round_input& in, std::size_t k,
                                             std::size_t rounds, bool& bad) {
    constexpr unsigned exp_shift = Width == 4 ? 23 : 7;
    constexpr int symbols = 16 * Width; // of a residual of 8*Width bits
    const __m512i zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i low12 = _mm512_set1_epi32(0xfff);
    const __m512i slot_mask = _mm512_set1_epi32(prob_scale - 1);
    const __m512i rans_low_v = _mm512_set1_epi32(static_cast<int>(rans_low));
    const __m512i fifteen = _mm512_set1_epi32(max_contexts - 1);
    const __m512i base = _mm512_set1_epi32(in.context_base);
    const __m512i exp_mask = _mm512_set1_epi32(0xff);
    const __m512i table_of_context = _mm512_loadu_si512(in.table_of_context);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);

    __m512i x = _mm512_loadu_si512(in.states);
    const std::byte* p = *in.rans_cursor;
    std::uint64_t pos = *in.bit_pos;
    __mmask16 invalid = 0;
    std::size_t done = 0;
    for (; done < rounds; ++done, k += 16) {
        if (p > in.rans_end || pos > in.bit_end) break;
        const __m512i at = Sparse ? _mm512_loadu_si512(in.positions + k)
                                  : _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(k)), lane);
        const __m512i r = load_refs<Width, Sparse>(in, k, at);
        // Context from the reference's exponent, then its table's slot for the state.
        __m512i c =
            _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(r, exp_shift), exp_mask), base);
        c = _mm512_min_epi32(_mm512_max_epi32(c, zero), fifteen);
        const __m512i table = _mm512_permutexvar_epi32(c, table_of_context);
        const __m512i slot =
            _mm512_or_si512(_mm512_slli_epi32(table, prob_bits), _mm512_and_si512(x, slot_mask));
        const __m512i e = _mm512_i32gather_epi32(slot, in.tables, 4);
        // x = freq * (x >> prob_bits) + offset in the symbol's range; renormalise the lanes
        // that fell below rans_low with the next words, in lane order.
        const __m512i freq = _mm512_add_epi32(_mm512_and_si512(e, low12), one);
        const __m512i offset = _mm512_and_si512(_mm512_srli_epi32(e, 12), low12);
        x = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(x, prob_bits)), offset);
        const __mmask16 need = _mm512_cmplt_epu32_mask(x, rans_low_v);
        const __m512i words = _mm512_maskz_expand_epi32(
            need, _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
        x = _mm512_mask_or_epi32(x, need, _mm512_slli_epi32(x, 16), words);
        p += 2 * static_cast<unsigned>(__builtin_popcount(need));

        // Symbol -> raw bit count and the leading bits (see symbol_of in residual.cpp).
        const __m512i sym = _mm512_srli_epi32(e, 24);
        invalid |= _mm512_cmpge_epu32_mask(sym, _mm512_set1_epi32(symbols));
        const __m512i nraw =
            _mm512_sub_epi32(_mm512_max_epu32(_mm512_srli_epi32(sym, 1), one), one);
        const __mmask16 small = _mm512_cmplt_epu32_mask(sym, _mm512_set1_epi32(2));
        __m512i high = _mm512_sllv_epi32(
            _mm512_or_si512(_mm512_set1_epi32(2), _mm512_and_si512(sym, one)), nraw);
        high = _mm512_mask_mov_epi32(high, small, sym);

        // Bit positions: exclusive prefix sum of the lengths over the lanes.
        __m512i sum = nraw;
        sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, zero, 15));
        sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, zero, 14));
        sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, zero, 12));
        sum = _mm512_add_epi32(sum, _mm512_alignr_epi32(sum, zero, 8));
        const __m512i bit_at =
            _mm512_add_epi32(_mm512_sub_epi32(sum, nraw), _mm512_set1_epi32(static_cast<int>(pos)));
        const __m512i byte_at = _mm512_srli_epi32(bit_at, 3);
        const __m512i shift = _mm512_and_si512(bit_at, _mm512_set1_epi32(7));
        const __m256i raw_lo =
            raw_bits_of_8(in.bits, _mm512_castsi512_si256(byte_at), _mm512_castsi512_si256(shift),
                          _mm512_castsi512_si256(nraw));
        const __m256i raw_hi =
            raw_bits_of_8(in.bits, _mm512_extracti64x4_epi64(byte_at, 1),
                          _mm512_extracti64x4_epi64(shift, 1), _mm512_extracti64x4_epi64(nraw, 1));
        const __m512i raw = _mm512_inserti64x4(_mm512_castsi256_si512(raw_lo), raw_hi, 1);
        pos += static_cast<std::uint32_t>(
            _mm_cvtsi128_si32(_mm512_castsi512_si128(_mm512_permutexvar_epi32(fifteen, sum))));

        // z -> element: unzigzag, add to the reference's order-preserving integer, map back.
        const __m512i z = _mm512_or_si512(high, raw);
        const __m512i d = _mm512_xor_si512(_mm512_srli_epi32(z, 1),
                                           _mm512_sub_epi32(zero, _mm512_and_si512(z, one)));
        __m512i v = _mm512_add_epi32(ordered<Width>(r, false), d);
        if constexpr (Width == 2) v = _mm512_and_si512(v, _mm512_set1_epi32(0xffff));
        store_elements<Width, Sparse>(in, k, at, ordered<Width>(v, true));
    }
    _mm512_storeu_si512(in.states, x);
    *in.rans_cursor = p;
    *in.bit_pos = pos;
    if (invalid) bad = true;
    return done;
}

TPDE_AVX512 void encode_rounds_avx512(std::uint32_t* states, std::uint16_t*& cursor,
                                      const enc_symbol* flat, const std::uint16_t* symbols,
                                      std::size_t rounds) {
    static_assert(sizeof(enc_symbol) == 24 && offsetof(enc_symbol, rcp_freq) == 8 &&
                  offsetof(enc_symbol, bias) == 12 && offsetof(enc_symbol, cmpl_freq) == 16 &&
                  offsetof(enc_symbol, rcp_shift) == 18);
    const auto* base = reinterpret_cast<const int*>(flat);
    const __m512i low16 = _mm512_set1_epi32(0xffff);
    __m512i x = _mm512_loadu_si512(states);
    std::uint16_t* p = cursor;
    for (std::size_t r = rounds; r-- > 0;) {
        const __m512i cs = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(symbols + 16 * r)));
        const __m512i at = _mm512_mullo_epi32(cs, _mm512_set1_epi32(6)); // 24-byte entries
        const __m512i x_max = _mm512_i32gather_epi32(at, base, 4); // low half; it fits 32 bits
        const __m512i rcp =
            _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(2)), base, 4);
        const __m512i bias =
            _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(3)), base, 4);
        const __m512i packed =
            _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(4)), base, 4);
        const __m512i cmpl = _mm512_and_si512(packed, low16);
        const __m512i shift = _mm512_srli_epi32(packed, 16);
        // Renormalise: lanes at or above x_max emit their low word, lane 0's lowest in memory.
        const __mmask16 emit = _mm512_cmpge_epu32_mask(x, x_max);
        const unsigned n = static_cast<unsigned>(__builtin_popcount(emit));
        const __m256i words = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(emit, x));
        _mm256_mask_storeu_epi16(p - n, static_cast<__mmask16>((1u << n) - 1), words);
        p -= n;
        x = _mm512_mask_srli_epi32(x, emit, x, 16);
        // q = (x * rcp) >> 32 >> shift; x += bias + q * cmpl
        const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(x, rcp), 32);
        const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(rcp, 32));
        const __m512i high = _mm512_mask_blend_epi32(0xaaaa, even, odd);
        const __m512i q = _mm512_srlv_epi32(high, shift);
        x = _mm512_add_epi32(_mm512_add_epi32(x, bias), _mm512_mullo_epi32(q, cmpl));
    }
    _mm512_storeu_si512(states, x);
    cursor = p;
}

std::size_t decode_rounds_avx512(const round_input& in, unsigned width, bool sparse, std::size_t k,
                                 std::size_t rounds, bool& bad) {
    if (width == 4)
        return sparse ? decode_rounds<4, true>(in, k, rounds, bad)
                      : decode_rounds<4, false>(in, k, rounds, bad);
    return sparse ? decode_rounds<2, true>(in, k, rounds, bad)
                  : decode_rounds<2, false>(in, k, rounds, bad);
}

#else

void set_avx512_allowed(bool) {}
bool have_avx512() {
    return false;
}
void encode_rounds_avx512(std::uint32_t*, std::uint16_t*&, const enc_symbol*, const std::uint16_t*,
                          std::size_t) {}
std::size_t decode_rounds_avx512(const round_input&, unsigned, bool, std::size_t, std::size_t,
                                 bool&) {
    return 0;
}

#endif

} // namespace tpde::codec::detail

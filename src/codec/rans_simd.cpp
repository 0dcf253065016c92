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
std::atomic<bool> vbmi_allowed{true};
} // namespace

void set_avx512_allowed(bool allowed) {
    avx512_allowed = allowed;
}

void set_vbmi_allowed(bool allowed) {
    vbmi_allowed = allowed;
}

bool have_vbmi() {
    static const bool cpu = __builtin_cpu_supports("avx512vbmi");
    return cpu && have_avx512() && vbmi_allowed.load(std::memory_order_relaxed);
}

bool have_avx512() {
    // avx512cd: the encoder's bit widths (vplzcntd)
    static const bool cpu =
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd");
    return cpu && avx512_allowed.load(std::memory_order_relaxed);
}

#define TPDE_DECODE_TARGET TPDE_AVX512
#define TPDE_RAW_BITS_BY_PERMUTE 0
#include "rans_simd_decode.inc"

TPDE_AVX512 void encode_rounds_avx512(std::uint32_t* states, std::uint16_t*& cursor,
                                      const enc_symbol* flat, const std::uint16_t* symbols,
                                      std::size_t rounds) {
    static_assert(sizeof(enc_symbol) == 24 && offsetof(enc_symbol, rcp_freq) == 8 &&
                  offsetof(enc_symbol, packed) == 20);
    static_assert(prob_scale - 1 < (1u << 11) && 2 * prob_scale < (1u << 16) &&
                  (rans_low >> prob_bits << 16) == (1u << 21));
    const auto* base = reinterpret_cast<const int*>(flat);
    const __m512i low11 = _mm512_set1_epi32(0x7ff);
    const __m512i low5 = _mm512_set1_epi32(0x1f);
    const __m512i scale = _mm512_set1_epi32(prob_scale);
    __m512i x = _mm512_loadu_si512(states);
    std::uint16_t* p = cursor;
    for (std::size_t r = rounds; r-- > 0;) {
        const __m512i cs = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(symbols + 16 * r)));
        const __m512i at = _mm512_mullo_epi32(cs, _mm512_set1_epi32(6)); // 24-byte entries
        const __m512i rcp =
            _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(2)), base, 4);
        const __m512i packed =
            _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(5)), base, 4);
        const __m512i cmpl = _mm512_and_si512(packed, low11);
        const __m512i shift = _mm512_and_si512(_mm512_srli_epi32(packed, 11), low5);
        const __m512i bias = _mm512_srli_epi32(packed, 16);
        // x_max = (rans_low >> prob_bits << 16) * freq, which fits 32 bits
        const __m512i x_max = _mm512_slli_epi32(_mm512_sub_epi32(scale, cmpl), 21);
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

TPDE_AVX512 void fill_dec_table_avx512(const std::uint16_t* freqs, std::uint32_t* slots) {
    const __m512i lane_slot = _mm512_slli_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 12);
    const __m512i next16 = _mm512_set1_epi32(16 << 12);
    std::uint32_t* at = slots;
    for (unsigned s = 0; s < max_symbols; ++s) {
        const std::uint32_t f = freqs[s];
        if (f == 0) continue;
        __m512i v = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(f | (s << 24))), lane_slot);
        for (std::uint32_t k = 0; k < f; k += 16, v = _mm512_add_epi32(v, next16)) {
            const auto left = f - k;
            const auto mask = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1);
            _mm512_mask_storeu_epi32(at + k, mask, v);
        }
        at += f;
    }
}

std::size_t decode_rounds_avx512(const round_input& in, unsigned width, bool sparse, std::size_t k,
                                 std::size_t rounds, bool& bad) {
    if (have_vbmi()) return decode_rounds_avx512_vbmi(in, width, sparse, k, rounds, bad);
    return decode_rounds_of(in, width, sparse, k, rounds, bad);
}

#else

void set_avx512_allowed(bool) {}
void set_vbmi_allowed(bool) {}
bool have_avx512() {
    return false;
}
bool have_vbmi() {
    return false;
}
void encode_rounds_avx512(std::uint32_t*, std::uint16_t*&, const enc_symbol*, const std::uint16_t*,
                          std::size_t) {}
void fill_dec_table_avx512(const std::uint16_t*, std::uint32_t*) {}
std::size_t decode_rounds_avx512(const round_input&, unsigned, bool, std::size_t, std::size_t,
                                 bool&) {
    return 0;
}

#endif

} // namespace tpde::codec::detail

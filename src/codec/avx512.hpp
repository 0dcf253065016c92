#pragma once
// What the AVX-512 kernels (rans_simd.cpp, rans_simd_vbmi.cpp, analyze_simd.cpp) share: the
// target attributes their functions carry, and the order-preserving float map on 32-bit
// lanes. For those files only: it turns off a warning for the rest of the file that includes
// it.
#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// and -Wuninitialized report once they are inlined into a kernel.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define TPDE_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,popcnt")))
// The same plus byte permutes (rans_simd_vbmi.cpp; only where have_vbmi()).
#define TPDE_AVX512_VBMI                                                                           \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx512vbmi,popcnt")))

namespace tpde::codec::detail::avx512 {

// The order-preserving integer of sign-magnitude floats held in the low 8*Width bits of each
// lane (flip all bits of negatives, set the sign bit of positives), or with `inverse` back.
template <unsigned Width>
TPDE_AVX512 inline __m512i ordered(__m512i x, bool inverse = false) {
    constexpr unsigned bits = 8 * Width;
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(1u << (bits - 1)));
    // all ones where the sign bit is set
    const __m512i neg = _mm512_srai_epi32(_mm512_slli_epi32(x, 32 - bits), 31);
    const __m512i flip = inverse
                             ? _mm512_or_si512(_mm512_xor_si512(neg, _mm512_set1_epi32(-1)), sign)
                             : _mm512_or_si512(neg, sign);
    __m512i r = _mm512_xor_si512(x, flip);
    if constexpr (Width == 2) r = _mm512_and_si512(r, _mm512_set1_epi32(0xffff));
    return r;
}

} // namespace tpde::codec::detail::avx512
#endif

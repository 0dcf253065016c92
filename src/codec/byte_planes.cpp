#include "byte_planes.hpp"

#include "avx512.hpp"
#include "rans_simd.hpp" // have_avx512()

namespace tpde::codec::detail {
namespace {

#if defined(__x86_64__)

// 64 bytes at a time: a byte shuffle groups each 16-byte lane's bytes by plane, then a
// dword (4 bytes) or qword (2 bytes) permute gathers each plane's groups. Both steps are
// transposes, so the merge runs them again (4 bytes) or inverted (2 bytes).
// Index vectors of a 4x4 transpose: of the bytes within each 16-byte lane, and of the
// dwords across the four lanes.
TPDE_AVX512 inline __m512i transpose_4x4_bytes() {
    return _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
}
TPDE_AVX512 inline __m512i transpose_4x4_dwords() {
    return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

TPDE_AVX512 std::size_t split_avx512(const std::byte* e, std::size_t n, std::size_t w,
                                     std::byte* p) {
    std::size_t i = 0;
    if (w == 4) {
        const __m512i bytes = transpose_4x4_bytes(), dwords = transpose_4x4_dwords();
        for (; i + 16 <= n; i += 16) {
            __m512i x = _mm512_loadu_si512(e + 4 * i);
            x = _mm512_permutexvar_epi32(dwords, _mm512_shuffle_epi8(x, bytes));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), _mm512_castsi512_si128(x));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + n + i),
                             _mm512_extracti32x4_epi32(x, 1));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2 * n + i),
                             _mm512_extracti32x4_epi32(x, 2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 3 * n + i),
                             _mm512_extracti32x4_epi32(x, 3));
        }
    } else if (w == 2) {
        const __m512i bytes = _mm512_broadcast_i32x4(
            _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
        const __m512i qwords = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
        for (; i + 32 <= n; i += 32) {
            __m512i x = _mm512_loadu_si512(e + 2 * i);
            x = _mm512_permutexvar_epi64(qwords, _mm512_shuffle_epi8(x, bytes));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), _mm512_castsi512_si256(x));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + n + i),
                                _mm512_extracti64x4_epi64(x, 1));
        }
    }
    return i;
}

TPDE_AVX512 std::size_t merge_avx512(const std::byte* p, std::size_t n, std::size_t w,
                                     std::byte* e) {
    std::size_t i = 0;
    if (w == 4) {
        const __m512i bytes = transpose_4x4_bytes(), dwords = transpose_4x4_dwords();
        auto load = [&](std::size_t at) {
            return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
        };
        for (; i + 16 <= n; i += 16) {
            __m512i x = _mm512_castsi128_si512(load(i));
            x = _mm512_inserti32x4(x, load(n + i), 1);
            x = _mm512_inserti32x4(x, load(2 * n + i), 2);
            x = _mm512_inserti32x4(x, load(3 * n + i), 3);
            x = _mm512_shuffle_epi8(_mm512_permutexvar_epi32(dwords, x), bytes);
            _mm512_storeu_si512(e + 4 * i, x);
        }
    } else if (w == 2) {
        const __m512i bytes = _mm512_broadcast_i32x4(
            _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
        const __m512i qwords = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
        for (; i + 32 <= n; i += 32) {
            __m512i x =
                _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
            x = _mm512_inserti64x4(
                x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + n + i)), 1);
            x = _mm512_shuffle_epi8(_mm512_permutexvar_epi64(qwords, x), bytes);
            _mm512_storeu_si512(e + 2 * i, x);
        }
    }
    return i;
}

#else

std::size_t split_avx512(const std::byte*, std::size_t, std::size_t, std::byte*) {
    return 0;
}
std::size_t merge_avx512(const std::byte*, std::size_t, std::size_t, std::byte*) {
    return 0;
}

#endif

} // namespace

void split_byte_planes(const std::byte* elements, std::size_t n, std::size_t width,
                       std::byte* planes) {
    std::size_t i = have_avx512() ? split_avx512(elements, n, width, planes) : 0;
    for (; i < n; ++i)
        for (std::size_t b = 0; b < width; ++b) planes[b * n + i] = elements[i * width + b];
}

void merge_byte_planes(const std::byte* planes, std::size_t n, std::size_t width,
                       std::byte* elements) {
    std::size_t i = have_avx512() ? merge_avx512(planes, n, width, elements) : 0;
    for (; i < n; ++i)
        for (std::size_t b = 0; b < width; ++b) elements[i * width + b] = planes[b * n + i];
}

} // namespace tpde::codec::detail

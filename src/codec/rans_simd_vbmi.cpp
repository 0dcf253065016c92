// The decode kernel for CPUs with AVX512-VBMI (see rans_simd_decode.inc).
#include <cstddef>
#include <cstring>

#include "avx512.hpp"
#include "rans.hpp"
#include "rans_simd.hpp"

namespace tpde::codec::detail {

#if defined(__x86_64__)

#define TPDE_DECODE_TARGET TPDE_AVX512_VBMI
#define TPDE_RAW_BITS_BY_PERMUTE 1
#include "rans_simd_decode.inc"

std::size_t decode_rounds_avx512_vbmi(const round_input& in, unsigned width, bool sparse,
                                      std::size_t k, std::size_t rounds, bool& bad) {
    return decode_rounds_of(in, width, sparse, k, rounds, bad);
}

#else

std::size_t decode_rounds_avx512_vbmi(const round_input&, unsigned, bool, std::size_t, std::size_t,
                                      bool&) {
    return 0;
}

#endif

} // namespace tpde::codec::detail

#pragma once
// Reference-relative coding of elements (the dense and sparse methods).
//
// Each element becomes the zigzag-coded integer difference of the order-preserving bit
// patterns of new and reference value (its distance in ulps). The residual's bit length,
// plus the bit below its leading one, is a symbol coded with rANS in a context given by the
// reference element's exponent; the bits below are stored raw. The sparse form codes the
// positions of changed elements as Elias-delta gaps and only their residuals.
#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "tpde/codec/codec.hpp"

namespace tpde::codec::detail {

struct delta_result {
    method chosen;
    std::size_t changed;
    unsigned lanes;     // interleaved rANS states used
    bool written{true}; // false: `proceed` declined, nothing was appended
};

// Told the payload size the delta is estimated at (within about a percent), once the block
// has been analysed and before the costlier half, the entropy coding, runs: returns whether
// to go on. Lets a caller try another method first and skip coding a delta that would lose.
using delta_proceed = std::function<bool(std::size_t estimated_payload)>;

// `reference` has exactly block.size() bytes. Appends the payload of the method chosen (the
// smaller estimate among those allowed) to `payload`. `lanes`: interleaved rANS states at
// most, 16 (what encode() asks for) or 2 (the layout of frames without flag_rans16); a short
// section uses 2 anyway, as 14 more states cost more than they save there.
delta_result encode_delta(element_type t, std::span<const std::byte> block,
                          std::span<const std::byte> reference, bool allow_dense, bool allow_sparse,
                          std::vector<std::byte>& payload, unsigned lanes = 16,
                          const delta_proceed& proceed = {});

// Estimated payload bits of the dense form, for choosing an element type.
double estimate_delta_bits(element_type t, std::span<const std::byte> block,
                           std::span<const std::byte> reference);

// Decodes into `out` (out.size() == reference.size() == the block size). Throws decode_error.
void decode_delta(method m, element_type t, std::span<const std::byte> payload,
                  std::span<const std::byte> reference, std::span<std::byte> out,
                  unsigned lanes = 16);

} // namespace tpde::codec::detail

#pragma once
// Coding without a reference, ZipNN-style: split elements into byte planes (the exponent
// bytes of floats are highly redundant, the low mantissa bytes are noise) and zstd each
// plane on its own; a plane that does not shrink is stored raw.
#include <span>
#include <vector>

#include "tpde/codec/element_type.hpp"

namespace tpde::codec::detail {

void encode_standalone(element_type t, std::span<const std::byte> block, int zstd_level,
                       std::vector<std::byte>& payload);
void decode_standalone(element_type t, std::span<const std::byte> payload,
                       std::span<std::byte> out);

} // namespace tpde::codec::detail

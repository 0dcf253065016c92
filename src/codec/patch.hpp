#pragma once
// Byte-level delta for non-tensor data (pickles, JSON headers): zstd with the reference as a
// prefix dictionary, so inserted or removed bytes (a longer string in a pickle) cost only
// themselves. Element-wise residuals cannot follow an insertion; LZ matching can.
#include <span>
#include <vector>

namespace tpde::codec::detail {

void encode_patch(std::span<const std::byte> block, std::span<const std::byte> reference, int level,
                  std::vector<std::byte>& payload);
void decode_patch(std::span<const std::byte> payload, std::span<const std::byte> reference,
                  std::span<std::byte> out);

} // namespace tpde::codec::detail

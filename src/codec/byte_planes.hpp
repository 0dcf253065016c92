#pragma once
// Elements split into byte planes and back: plane b holds byte b of every element, in order
// (planes[b * n + i] = elements[i * width + b]). The standalone method codes each plane on
// its own: the exponents' bytes compress, the low mantissa bytes do not.
#include <cstddef>

namespace tpde::codec::detail {

void split_byte_planes(const std::byte* elements, std::size_t n, std::size_t width,
                       std::byte* planes);
void merge_byte_planes(const std::byte* planes, std::size_t n, std::size_t width,
                       std::byte* elements);

} // namespace tpde::codec::detail

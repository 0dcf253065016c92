#pragma once
// Guessing a block's element type when the caller does not know it: try each type on a
// small sample and keep the one that codes smallest.
#include <span>

#include "tpde/codec/element_type.hpp"

namespace tpde::codec::detail {

element_type probe_element_type(std::span<const std::byte> block,
                                std::span<const std::byte> reference);

} // namespace tpde::codec::detail

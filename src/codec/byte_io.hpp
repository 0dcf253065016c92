#pragma once
// The codec's view of the little-endian helpers: frames are hostile input, so every read is
// checked against the end of its span and throws decode_error.
#include "tpde/codec/codec.hpp"
#include "tpde/util/little_endian.hpp"

namespace tpde::codec::detail {

using util::byte_sink;
using util::copy_bytes;
using util::load_le;
using util::store_le;

class byte_source : public util::byte_source<decode_error> {
public:
    explicit byte_source(std::span<const std::byte> in)
        : util::byte_source<decode_error>(in, "corrupt frame") {}
};

} // namespace tpde::codec::detail

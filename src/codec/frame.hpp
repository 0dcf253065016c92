#pragma once
// The fixed frame header. Layout (little-endian), frame_header_size bytes:
//   0  magic "TPDF"        4  format version     5  method     6  element type   7  flags
//   8  raw size (u32)     12  payload size (u32)
//  16  XXH3-64 of the decoded block
//  24  XXH3-64 of the reference the frame was coded against (0 without one)
//  32  frame check: XXH3-64 of the payload seeded with XXH3-64 of bytes 0..31, so any
//      damaged byte is caught before decoding starts
#include <cstdint>
#include <span>

#include "tpde/codec/codec.hpp"

namespace tpde::codec::detail {

inline constexpr std::uint8_t format_version = 1;
inline constexpr std::uint8_t flag_has_reference = 1;
// dense/sparse only: the residual section's rANS interleaves 16 states (else 2).
inline constexpr std::uint8_t flag_rans16 = 2;

struct frame_header {
    method m{method::raw};
    element_type type{element_type::bytes};
    std::uint8_t flags{0};
    std::uint32_t raw_size{0};
    std::uint32_t payload_size{0};
    std::uint64_t content_hash{0};
    std::uint64_t reference_hash{0};
};

// Writes the header of a complete frame (payload already in place after it).
void write_header(std::span<std::byte> frame, const frame_header& h);
// The same for a payload kept elsewhere; `header` is frame_header_size bytes.
void write_header(std::span<std::byte> header, std::span<const std::byte> payload,
                  const frame_header& h);
// Validates magic, version, enum ranges, that the frame is exactly header + payload long
// and, unless told not to (fuzzing the decoders behind it), the frame check.
// Throws decode_error.
frame_header read_header(std::span<const std::byte> frame, bool verify_check = true);

} // namespace tpde::codec::detail

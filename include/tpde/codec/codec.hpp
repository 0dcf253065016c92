#pragma once
// The TPDE block codec: one block of a new checkpoint, optionally against the block at the
// same place in the previous checkpoint of its chain, to one self-checking frame and back.
// Knows bytes and element types only: no files, no paths.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "tpde/codec/element_type.hpp"

namespace tpde::codec {

enum class method : std::uint8_t {
    raw = 0,        // bytes as they are
    standalone = 1, // byte planes + zstd, no reference
    dense = 2,      // residual of every element against the reference, context-modelled rANS
    sparse = 3,     // Elias-delta gaps of changed positions + residuals of those only
    patch = 4,      // zstd with the reference as prefix dictionary: for pickles, headers, text
};
inline constexpr std::uint8_t method_count = 5;
const char* name_of(method m);

// Fixed size of every frame's header; a frame is at most block size + this.
inline constexpr std::size_t frame_header_size = 40;

// Thrown for every frame the decoder refuses: corrupt, truncated, forged, or decoded against
// the wrong reference. what() is one line meant for a user.
class decode_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
// Decoding against a reference other than the one the frame was encoded with.
class reference_mismatch : public decode_error {
public:
    using decode_error::decode_error;
};

struct encode_options {
    // Element type hint; nullopt lets the encoder probe the block.
    std::optional<element_type> type{};
    int zstd_level{1}; // for the standalone method's byte planes
    // Methods the encoder may choose; a test or benchmark may force one. raw is always allowed.
    bool allow_standalone{true};
    bool allow_dense{true};
    bool allow_sparse{true};
    bool allow_patch{true};
    // Interleaved rANS states of dense/sparse frames: 16, or 2 for the layout frames had
    // before (tests check that old frames still decode).
    unsigned rans_lanes{16};
};

struct decode_options {
    // A frame claiming a larger decoded size is refused before anything is allocated.
    std::size_t max_raw_size{64u << 20};
    // Off only to let a fuzzer reach the decoders behind the frame check.
    bool verify_frame_check{true};
};

// What the encoder learned about a block, for `tpde stats` and the store's accounting.
struct encode_info {
    method chosen{method::raw};
    element_type type{element_type::bytes};
    std::size_t elements{0};
    std::size_t changed{0}; // elements differing from the reference (all of them when none)
    std::size_t frame_bytes{0};
};

// Encodes `block` against `reference` (empty span = none). The reference may be shorter or
// longer than the block; missing reference elements count as zero. The frame never exceeds
// block.size() + frame_header_size.
std::vector<std::byte> encode(std::span<const std::byte> block,
                              std::span<const std::byte> reference, const encode_options& opts = {},
                              encode_info* info = nullptr);

// The header of the raw frame of `block`: it followed by the block's bytes is the frame
// encode() makes with every other method disallowed. For writers that must keep up with the
// disk: the block is hashed, not copied.
std::array<std::byte, frame_header_size> raw_frame_header(std::span<const std::byte> block,
                                                          element_type type = element_type::bytes);

// Decodes a frame; `reference` must be byte-identical to the encoder's. Throws decode_error.
std::vector<std::byte> decode(std::span<const std::byte> frame,
                              std::span<const std::byte> reference,
                              const decode_options& opts = {});
// The same into the start of `buffer` (util::grown_to, only after the header is checked);
// returns the decoded bytes. For a caller decoding block after block into recycled buffers.
std::span<std::byte> decode(std::span<const std::byte> frame, std::span<const std::byte> reference,
                            std::vector<std::byte>& buffer, const decode_options& opts = {});

// Decodes into `out`, which must be exactly the frame's decoded size (else decode_error): no
// allocation, for callers that own the destination (a reader filling its caller's buffer).
void decode_into(std::span<const std::byte> frame, std::span<const std::byte> reference,
                 std::span<std::byte> out, const decode_options& opts = {});

// Frame facts readable without decoding (checked header only).
struct frame_summary {
    method m;
    element_type type;
    std::uint32_t raw_size;
    std::uint32_t payload_size;
    bool has_reference;
};
frame_summary inspect(std::span<const std::byte> frame);

} // namespace tpde::codec

#pragma once
// The offline `.tpde` file written by `tpde encode`: a header, then one record per block in
// file order: the frame and the range of the reference file it was coded against. Layout in
// docs/codec.md.
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "file_io.hpp"

namespace tpde::tools {

struct container_header {
    std::uint32_t block_size{0};
    std::uint64_t total_size{0}; // bytes of the original file
    bool has_reference{false};
};

inline constexpr std::size_t container_header_size = 32;
inline constexpr std::uint32_t max_block_size = 64u << 20;

std::vector<std::byte> write_container_header(const container_header& h);
// Throws std::runtime_error with a user-facing message.
container_header read_container_header(const input_file& in);

struct block_record {
    std::uint64_t ref_offset{0};
    std::uint32_t ref_size{0}; // 0: coded without a reference
    std::span<const std::byte> frame;
};
inline constexpr std::size_t block_record_header_size = 16; // u32 frame length, u64, u32

// The record: its header and the frame, in one write.
void write_block_record(output_file& out, const block_record& r);
// The record that starts at `offset` (its frame read into `frame`); advances offset past it.
// Throws std::runtime_error naming the file on a truncated or corrupt record.
block_record read_block_record(const input_file& in, std::uint64_t& offset,
                               std::uint32_t block_size, std::vector<std::byte>& frame);

} // namespace tpde::tools

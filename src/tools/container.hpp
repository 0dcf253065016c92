#pragma once
// The offline `.tpde` file written by `tpde encode`: a header, then one length-prefixed
// frame per fixed block. Layout in docs/tpde-file-format.md.
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

// The frame that starts at `offset` (a view into the file's mapping); advances offset past it.
std::span<const std::byte> read_frame(const input_file& in, std::uint64_t& offset,
                                      std::uint32_t block_size);

} // namespace tpde::tools

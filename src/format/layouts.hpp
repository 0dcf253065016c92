#pragma once
// The individual segmenters behind segment_file(). Each throws format_error when the file is
// not what it claims to be.
#include <span>

#include "tpde/format/segment.hpp"
#include "zip.hpp"

namespace tpde::format::detail {

file_layout torch_zip_layout(std::span<const std::byte> file);
file_layout safetensors_layout(std::span<const std::byte> file);
file_layout npy_layout(std::span<const std::byte> file);
file_layout npz_layout(std::span<const std::byte> file);
file_layout distcp_layout(std::span<const std::byte> file);

// Segments of one zip archive's records (names from `name_of_record`), appended to `out`;
// headers and gaps between records become their own small segments.
void append_zip_segments(std::span<const std::byte> file, const zip_archive& z,
                         const std::string& prefix, file_layout& out);

// Fills the gaps in `segments` (sorted by offset) with unnamed-type header segments so the
// layout covers [0, size) exactly; throws on overlap.
void close_gaps(file_layout& layout, std::uint64_t size);

} // namespace tpde::format::detail

#pragma once
// The individual segmenters behind segment_file(). Each throws format_error when the file is
// not what it claims to be.
#include <span>

#include "tpde/format/segment.hpp"
#include "zip.hpp"

namespace tpde::format::detail {

file_layout torch_zip_layout(std::span<const std::byte> file);
file_layout safetensors_layout(std::span<const std::byte> file);
// The header and tensor segments from the first 8 + header-length bytes alone.
file_layout safetensors_header_layout(std::span<const std::byte> head);
// Length of an .npy header (magic to the end of its dict) and the element type it names.
std::pair<std::uint64_t, std::optional<codec::element_type>>
npy_header(std::span<const std::byte> b);
file_layout npy_layout(std::span<const std::byte> file);
file_layout npz_layout(std::span<const std::byte> file);
file_layout distcp_layout(std::span<const std::byte> file);

// Segments of one zip archive's records (names from `name_of_record`), appended to `out`;
// headers and gaps between records become their own small segments.
void append_zip_segments(std::span<const std::byte> file, const zip_archive& z,
                         const std::string& prefix, file_layout& out);

// The segment of the bytes between `prev` (null: the start of the file) and the next
// segment: named after what precedes it (a zip data descriptor follows its record), so an
// added record does not rename every later gap.
segment gap_after(const segment* prev, std::uint64_t offset, std::uint64_t length);

// Fills the gaps in `segments` (sorted by offset) with unnamed-type header segments so the
// layout covers [0, size) exactly; throws on overlap.
void close_gaps(file_layout& layout, std::uint64_t size);

} // namespace tpde::format::detail

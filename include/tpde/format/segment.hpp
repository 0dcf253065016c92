#pragma once
// Checkpoint files as named segments. A segmenter reads a file's layout (torch.save zip,
// safetensors, numpy, torch.distributed.checkpoint) and cuts it into segments that cover it
// end to end: each tensor's bytes with its element type where the format says it, and the
// headers between them. Names are stable across checkpoints of one run, so a segment finds
// its reference in the parent file even when everything after a grown header has shifted.
// No storage, no FUSE: bytes in, segments out.
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tpde/codec/element_type.hpp"

namespace tpde::format {

struct segment {
    // The format's name for these bytes, stable across checkpoints of one run ("" for a
    // generic file): a record of a zip ("data/3", "data.pkl", "data/3#header"), a safetensors
    // tensor name. For a torch storage this is its storage key, which torch numbers in the
    // order the pickle meets the storages: it shifts when an entry is added or removed.
    std::string name;
    std::uint64_t offset{0};
    std::uint64_t length{0};
    std::optional<codec::element_type> type{}; // nullopt: unknown, the codec probes
    // The name the checkpoint itself gives the tensor these bytes belong to, where it gives
    // one beyond `name`: the state-dict path of a torch storage's first reference
    // ("model.blocks.0.attn.weight", and "...#header", "...#after" for its zip header and
    // data descriptor), a DCP item's fully qualified name. "" when unknown.
    std::string tensor{};
    // Bytes of one row of the tensor's leading dimension when its shape is known (the
    // tensor covers the segment contiguously); 0 when not known.
    std::uint64_t row_bytes{0};
};

// Length of a segment that runs to the end of the file, not known yet (the last segment a
// stream_segmenter hands out may be).
inline constexpr std::uint64_t open_ended = std::numeric_limits<std::uint64_t>::max();

enum class layout_kind { generic, torch_zip, safetensors, npy, npz, distcp };
const char* name_of(layout_kind k);

struct file_layout {
    layout_kind kind{layout_kind::generic};
    std::vector<segment> segments; // in offset order, contiguous, covering [0, size)
    // Why a recognised-looking file fell back to generic (empty when it did not).
    std::string fallback_reason;
};

// Never throws on bad input: a file whose headers are garbage, truncated or lying falls back
// to one generic segment, with the reason in fallback_reason (and at debug log level).
file_layout segment_file(std::span<const std::byte> bytes);

// One generic segment covering everything.
file_layout generic_layout(std::uint64_t size);

} // namespace tpde::format

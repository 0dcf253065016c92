#pragma once
// torch.distributed.checkpoint (DCP) names. A DCP checkpoint is a directory of
// `__<rank>_<n>.distcp` files, each a concatenation of items (a torch.save archive per tensor,
// raw bytes for other values), and a `.metadata` file, a pickled Metadata whose storage_data
// maps each item's MetadataIndex (fully qualified name, chunk offset) to where it is
// (_StorageInfo: relative_path, offset, length). Without the .metadata, a .distcp file's items
// are named by their order (item1/, item2/...), which shifts when an item is added; with it,
// by their fully qualified names. The .metadata is written last, after every .distcp file.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tpde/format/segment.hpp"

namespace tpde::format {

struct dcp_item {
    std::string file; // relative_path: the .distcp file holding it
    std::uint64_t offset{0}, length{0};
    // The fully qualified name ("model.layers.0.attn.wq.weight"), with "@o1,o2" appended for a
    // chunk that does not start at the tensor's origin (a shard).
    std::string name;
};

struct dcp_metadata {
    std::vector<dcp_item> items;
};

// Reads a .metadata file. Never throws on bad input: nullopt, with the reason in `why`.
std::optional<dcp_metadata> read_dcp_metadata(std::span<const std::byte> bytes,
                                              std::string* why = nullptr);

// Gives the segments of `layout` (the layout of the .distcp file `file_name`, as the
// metadata's relative_path names it) the names of the items they lie in (segment::tensor:
// "<fqn>/data/0", "<fqn>/data.pkl#header", ...; a raw item's bytes: "<fqn>"), splitting
// untyped segments (gaps, a generic file) at item boundaries. Items that do not fit the
// layout (past its end, overlapping, cutting a typed segment) are left unnamed. Returns the
// number of items named.
std::size_t name_dcp_items(file_layout& layout, const dcp_metadata& md, std::string_view file_name);

} // namespace tpde::format

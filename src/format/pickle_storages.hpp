#pragma once
// What a torch.save archive's data.pkl says of its storages, read without Python (see
// pickle_machine.hpp): the element type and size of each (from its persistent id,
// ('storage', <GLOBAL torch.XStorage>, key, location, numel)), the name the checkpoint gives it
// (the dict keys and list indices leading to its first reference) and, where the tensor that
// first references it covers it contiguously, the size of one row of its leading dimension.
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "tpde/codec/element_type.hpp"

namespace tpde::format::detail {

struct storage_info {
    std::optional<codec::element_type>
        type;                           // nullopt: a type the codec has no model for (int64...)
    std::optional<std::uint64_t> bytes; // numel * element size, when both are known
    // Path of its first reference, keys and indices joined by '.' ("model.blocks.0.attn.weight",
    // "optimizer.state.3.exp_avg"); empty when not known or not unique (two paths that spell
    // alike, a tensor at the top level, or a pickle too large to follow).
    std::string name;
    // Bytes of one row of the leading dimension (product of the trailing dims x element size)
    // of the tensor that first references it, when that tensor starts at the storage's start,
    // is contiguous and covers it exactly; 0 when not known.
    std::uint64_t row_bytes{0};
};

// storage key ("0", "1", ...) -> what the pickle says of it. Throws format_error on a
// malformed or hostile pickle.
std::map<std::string, storage_info> storage_types(std::span<const std::byte> pickle);

} // namespace tpde::format::detail

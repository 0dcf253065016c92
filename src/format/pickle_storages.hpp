#pragma once
// Element types of a torch.save archive's storages, read from its data.pkl without Python:
// a small pickle machine that follows only what persistent ids are built from
// (('storage', <GLOBAL torch.XStorage>, key, location, numel)) and skips everything else.
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
};

// storage key ("0", "1", ...) -> what the pickle says of it. Throws format_error on a
// malformed or hostile pickle.
std::map<std::string, storage_info> storage_types(std::span<const std::byte> pickle);

} // namespace tpde::format::detail

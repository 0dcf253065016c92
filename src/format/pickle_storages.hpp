#pragma once
// Element types of a torch.save archive's storages, read from its data.pkl without Python:
// a small pickle machine that follows only what persistent ids are built from
// (('storage', <GLOBAL torch.XStorage>, key, location, numel)) and skips everything else.
#include <map>
#include <optional>
#include <span>
#include <string>

#include "tpde/codec/element_type.hpp"

namespace tpde::format::detail {

// storage key ("0", "1", ...) -> element type, or nullopt for storages of types the codec
// has no model for (int64, ...). Throws format_error on a malformed or hostile pickle.
std::map<std::string, std::optional<codec::element_type>>
storage_types(std::span<const std::byte> pickle);

} // namespace tpde::format::detail

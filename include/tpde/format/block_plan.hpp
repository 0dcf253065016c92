#pragma once
// Matching a new file's segments to its parent's and cutting them into codec blocks. Each
// segment takes its reference from the parent's segment of the same name; failing that, the
// parent's bytes at the same offset; failing that, none.
#include <cstdint>
#include <optional>
#include <vector>

#include "tpde/format/segment.hpp"

namespace tpde::format {

enum class match_kind { by_name, by_offset, none };
const char* name_of(match_kind m);

struct planned_block {
    std::uint64_t offset{0}; // in the new file
    std::uint32_t size{0};
    std::uint64_t ref_offset{0}; // in the parent file
    std::uint32_t ref_size{0};   // 0: no reference
    std::optional<codec::element_type> type{};
    std::size_t segment{0}; // index into the new layout's segments (the first, for a run)
    match_kind match{match_kind::none};
};

struct plan_options {
    std::uint32_t block_size{128u << 10};
    // Consecutive segments shorter than this share a block.
    std::uint32_t small_segment{4096};
};

// Blocks covering the new file in order. `parent` may be null (no reference at all).
std::vector<planned_block> plan_blocks(const file_layout& next, const file_layout* parent,
                                       std::uint64_t parent_size, const plan_options& opts = {});

} // namespace tpde::format

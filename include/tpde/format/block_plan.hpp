#pragma once
// Matching a new file's segments to its parent's and cutting them into codec blocks. Each
// segment takes its reference from the parent's segment of the same checkpoint name
// (segment::tensor: a state-dict path, a DCP name); failing that, of the same format name
// (segment::name: a record, which for torch storages is the storage key); failing that, the
// parent's bytes at the same offset; failing that, none. Where both files name a tensor and
// the names differ, the storage key matches only a segment of the same length and type (the
// same tensor, renamed, at the same place in the dict order). A tensor whose leading
// dimension grew codes its rows that the parent has against them and its new rows on their
// own (a block boundary where the parent's rows end).
//
// One cutter serves both callers: a stream (the store's writer, which learns segments and
// bytes as they arrive) and a whole file (plan_blocks: re-encoding, the tpde tool). Both cut
// the same file into the same blocks.
#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tpde/format/segment.hpp"

namespace tpde::format {

enum class match_kind {
    by_name,   // the same checkpoint name (or format name, where there is no other)
    by_key,    // the same storage key (record name) where a checkpoint name did not match
    by_offset, // the parent's bytes at the same offset
    none
};
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

// Cuts segments into blocks, in file order: each block within one segment (so it has one
// element type), at most block_size, except that a run of small segments (zip headers,
// descriptors, tiny tensors) shares one block where the parent's layout agrees.
class block_cutter {
public:
    // `parent` (may be null: no reference at all) must outlive the cutter.
    block_cutter(const file_layout* parent, std::uint64_t parent_size, plan_options opts = {});

    // The next segment of the file, contiguous with the last one added; its length may be
    // open_ended (the last segment of a stream, whose end is not known yet).
    void add(segment s);
    // End of file: the file's final layout (of which the segments added so far are a prefix,
    // up to the clipping of the last ones) replaces them.
    void finish(const file_layout& final_layout);
    // The next block, once the first `known` bytes of the file decide it and hold its bytes;
    // nullopt while more bytes or segments are needed, or when every block is out.
    std::optional<planned_block> next(std::uint64_t known);

private:
    struct reference_range {
        match_kind how{match_kind::none};
        std::uint64_t offset{0}, length{0};
        // A resized tensor: a block ends here (relative to the segment), where the parent's
        // rows end; 0 for none.
        std::uint64_t split{0};
    };
    reference_range reference_of(const segment& s) const;
    // Length of segment i as far as `known` bytes tell: nullopt while an open-ended segment
    // may still turn out shorter than small_segment.
    std::optional<std::uint64_t> length_of(std::size_t i, std::uint64_t known) const;
    planned_block with_reference(planned_block b, const reference_range& ref,
                                 std::uint64_t rel) const;

    const file_layout* parent_;
    std::uint64_t parent_size_;
    plan_options opts_;
    std::uint64_t block_max_;
    std::unordered_map<std::string_view, const segment*> parent_by_name_;
    std::unordered_map<std::string_view, const segment*> parent_by_tensor_;
    std::vector<segment> segments_;
    bool final_{false};
    std::size_t current_{0};  // segment the next block starts in
    std::uint64_t within_{0}; // offset of the next block in it
};

// Blocks covering the new file in order. `parent` may be null (no reference at all).
std::vector<planned_block> plan_blocks(const file_layout& next, const file_layout* parent,
                                       std::uint64_t parent_size, const plan_options& opts = {});

} // namespace tpde::format

#pragma once
// Work on a chain after the fact: re-encoding the previous version as a delta against a
// newly committed one (compaction), and freeing versions no file names (collection), which
// first re-encodes what was encoded against them.
#include <string>

#include "store/chain.hpp"

namespace tpde::store {

// After `vid` committed (or its successors were deleted): re-encodes the best standalone
// predecessor of it as a delta against it, if that keeps every version within
// max_read_depth frames per block. Returns whether it did.
bool compact_after_commit(store_context& ctx, const chain& c, const std::string& vid);

// Frees every version of the chain that no file names (link count 1), then lets standalone
// versions left behind become deltas again.
void collect_chain(store_context& ctx, const chain& c);

// Offers every version of the chain its best standalone predecessor (after a stop between a
// commit and its compaction, or after deletions).
void relink_chain(store_context& ctx, const chain& c);

// Compresses every live version of the chain that was written uncompressed and is not a
// delta (the newest, usually): standalone coding, so it reads at one frame per block.
void compress_uncompressed(store_context& ctx, const chain& c);

// Re-encodes version `vid` against `base` ("" = standalone) and swaps its object, unless the
// version changed meanwhile. Returns whether the swap happened.
bool reencode(store_context& ctx, const chain& c, const std::string& vid, const std::string& base);

// Orders candidate predecessors: how well the digit runs of `candidate` match those of
// `path`, later runs weighing more (ranks and shard numbers come after step numbers).
std::vector<int> digit_match_score(const std::string& path, const std::string& candidate);

} // namespace tpde::store

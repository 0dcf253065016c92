#pragma once
// Segmenting a checkpoint as it is written: bytes arrive in order (a FUSE write stream), and
// segments are handed out as soon as their extent is known — usually long before their
// bytes arrive — so a writer can encode each block as it fills, holding only a few blocks.
// Reads local zip headers and data descriptors (torch.save writes sizes only after the data,
// and in the central directory at the very end), takes tensor sizes from the pickle, which
// comes first. The same names as segment_file(), so either can be a parent of the other.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tpde/format/segment.hpp"

namespace tpde::format {

struct stream_options {
    // Bytes held while looking for the end of a record of unknown size (a pickle); beyond
    // this the rest of the file is left unparsed.
    std::size_t max_lookahead{64u << 20};
};

class stream_segmenter {
public:
    explicit stream_segmenter(stream_options opts = {});
    ~stream_segmenter();
    stream_segmenter(const stream_segmenter&) = delete;
    stream_segmenter& operator=(const stream_segmenter&) = delete;

    // The next bytes of the file. Returns the segments whose extent became known, in order;
    // the last may be open_ended. Never throws on bad input: it stops parsing instead.
    std::vector<segment> feed(std::span<const std::byte> bytes);
    // End of file. Returns the final segments not handed out yet, and the complete layout
    // (every segment, the open-ended one clipped, covering the file exactly).
    file_layout finish();

private:
    struct impl;
    std::unique_ptr<impl> p_;
};

} // namespace tpde::format

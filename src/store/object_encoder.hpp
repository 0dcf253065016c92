#pragma once
// Encodes a version's blocks into an object. A block is coded on the store's pool (at most
// two per worker in flight: memory stays a few blocks whatever the file size), on the calling
// thread, or written raw, by the encoder's mode. Frames may land in the object in any order
// (the footer says where each is); the block table is in file order.
#include <optional>
#include <string>
#include <vector>

#include "context.hpp"
#include "object_file.hpp"
#include "tpde/codec/codec.hpp"
#include "tpde/util/ordered_pipeline.hpp"

namespace tpde::store {

class object_encoder {
public:
    // compress: every block coded (maintenance, tools); raw: raw frames only, hashed on the
    // calling thread (a writer that must keep up with the disk whatever the CPU); adaptive:
    // coded on the pool while a worker is free, else raw at once, so a writer never waits
    // for the encoder and what it cannot keep up with is written raw (and coded later).
    object_encoder(store_context& ctx, const std::string& shown,
                   write_compression mode = write_compression::compress);
    // Encodes `block` (at `offset` in the version) against `ref` (bytes [ref_offset, +size)
    // of the base version; empty: none). Owned buffers are handed to a worker as they are;
    // borrowed ones are encoded in place when coding runs on this thread, else copied.
    // Borrowed blocks of an uncompressed encoder are written from where they are, together
    // with the next ones: they must stay unchanged until write_borrowed().
    void add(std::uint64_t offset, std::vector<std::byte>&& block,
             std::optional<codec::element_type> type, std::uint64_t ref_offset = 0,
             std::vector<std::byte>&& ref = {});
    void add(std::uint64_t offset, std::span<const std::byte> block,
             std::optional<codec::element_type> type, std::uint64_t ref_offset = 0,
             std::span<const std::byte> ref = {});
    // Writes the borrowed blocks still waiting to be written (and frames coded meanwhile).
    void write_borrowed();
    // Waits for every block added so far to be in the object.
    void drain();
    // Drains, writes the footer and fsyncs; then publish() through writer().
    void finish(format::file_layout layout, std::string base, std::uint64_t size);
    const std::vector<block_entry>& blocks() const { return blocks_; }
    object_writer& writer() { return writer_; }
    // Decodes a block written earlier (a standalone one: no reference).
    std::vector<std::byte> read_back(std::size_t block);

private:
    struct encoded {
        block_entry entry;
        std::vector<std::byte> frame;
        codec::encode_info info;
    };
    void consume(encoded&& e);
    codec::encode_options options(std::optional<codec::element_type> type) const;
    store_context& ctx_;
    object_writer writer_;
    util::ordered_pipeline<encoded> pipe_;
    std::vector<block_entry> blocks_;
    void add_raw(std::uint64_t offset, std::span<const std::byte> block,
                 std::optional<codec::element_type> type, std::uint64_t ref_offset,
                 std::size_t ref_size);
    std::uint64_t elements_{0}, changed_{0};
    write_compression mode_;
    bool parallel_;         // blocks go to pool workers (else they are coded on the calling thread)
    bool wrote_raw_{false}; // some block went raw: the footer says so, for maintenance
};

} // namespace tpde::store

#pragma once
// Reads one version's content: block by block through the shared cache, each block decoded
// against its reference range of the base version, itself read through a version_reader.
#include <atomic>
#include <memory>
#include <string>

#include "context.hpp"
#include "object_file.hpp"

namespace tpde::store {

class version_reader : public file_reader, public std::enable_shared_from_this<version_reader> {
public:
    version_reader(store_context& ctx, std::shared_ptr<const object_file> obj,
                   std::shared_ptr<const version_reader> base, std::string shown);
    std::uint64_t size() const override { return obj_->footer().logical_size; }
    std::size_t read(std::uint64_t offset, std::span<std::byte> out) const override;
    const object_footer& footer() const { return obj_->footer(); }
    const object_file& object() const { return *obj_; }
    const version_reader* base() const { return base_.get(); }
    unsigned depth() const { return base_ ? base_->depth() + 1 : 0; }
    // The decoded block `i` (cached).
    cache::block_ptr block(std::size_t i) const;
    std::size_t block_at(std::uint64_t offset) const; // index of the block holding offset
    // Decodes block i into `out` (exactly its size), its reference read from the base.
    void decode_block_into(std::size_t i, std::span<std::byte> out) const;
    // The two halves of that, apart for fsck: the reference bytes of block i (empty when it
    // has none; read through the base's reader and the cache), then block i's own frame
    // decoded and checked against them, never from the cache.
    void read_reference(std::size_t i, std::vector<std::byte>& ref) const;
    void decode_frame(std::size_t i, std::span<const std::byte> ref,
                      std::span<std::byte> out) const;

private:
    std::vector<std::byte> decode_block(std::size_t i) const;
    // Decodes whole blocks straight into the caller's buffer, spread over the pool.
    void decode_direct(const std::vector<std::size_t>& blocks, std::uint64_t offset,
                       std::span<std::byte> out) const;
    // A sequential reader gets the next blocks decoded on the pool while it copies this one.
    void read_ahead(std::size_t next_block) const;
    store_context& ctx_;
    std::shared_ptr<const object_file> obj_;
    std::shared_ptr<const version_reader> base_;
    std::string shown_;                                    // the logical path, for errors
    mutable std::atomic<std::uint64_t> next_offset_{0};    // where a sequential read goes on
    mutable std::atomic<std::size_t> read_ahead_until_{0}; // blocks below are requested
    mutable std::atomic<unsigned> read_ahead_in_flight_{0};
};

} // namespace tpde::store

#include "object_encoder.hpp"

#include <algorithm>
#include <memory>

#include "tpde/codec/codec.hpp"

namespace tpde::store {

object_encoder::object_encoder(store_context& ctx, const std::string& shown, write_compression mode)
    : ctx_(ctx), writer_(ctx.tmp_dir.get(), ctx.tmp_name("obj"), shown,
                         store_context::on_background_thread() ? object_writer::writeback::bounded
                         : ctx.opts.early_writeback            ? object_writer::writeback::early
                                                               : object_writer::writeback::lazy),
      // Adaptive: eight blocks per worker may wait, so the bursts of a 1 MiB write request
      // are absorbed; only a writer faster than the encoder for longer writes raw.
      pipe_(mode == write_compression::raw ? nullptr : ctx.pool_for_this_thread(),
            (mode == write_compression::adaptive ? 8 : 2) * (ctx.pool ? ctx.pool->size() : 1)),
      mode_(mode), parallel_(mode != write_compression::raw && ctx.pool_for_this_thread()) {}

void object_encoder::consume(encoded&& e) {
    e.entry.frame_pos = writer_.append(e.frame);
    e.entry.frame_len = static_cast<std::uint32_t>(e.frame.size());
    if (e.info.type != codec::element_type::bytes) {
        elements_ += e.info.elements;
        changed_ += e.info.changed;
    }
    blocks_.push_back(e.entry);
}

codec::encode_options object_encoder::options(std::optional<codec::element_type> type) const {
    codec::encode_options opts;
    opts.type = type;
    opts.zstd_level = ctx_.opts.zstd_level;
    return opts;
}

// A raw frame: hashed and written from where the bytes are (gathered with the next ones).
void object_encoder::add_raw(std::uint64_t offset, std::span<const std::byte> block,
                             std::optional<codec::element_type> type, std::uint64_t ref_offset,
                             std::size_t ref_size) {
    auto header = codec::raw_frame_header(block, type.value_or(codec::element_type::bytes));
    block_entry entry{offset,     static_cast<std::uint32_t>(block.size()), 0, 0,
                      ref_offset, static_cast<std::uint32_t>(ref_size)};
    entry.frame_pos = writer_.append(header, block);
    entry.frame_len = static_cast<std::uint32_t>(header.size() + block.size());
    blocks_.push_back(entry);
    if (type && *type != codec::element_type::bytes) { // all changed: there is no base
        elements_ += block.size() / codec::width_of(*type);
        changed_ += block.size() / codec::width_of(*type);
    }
    wrote_raw_ = true;
}

void object_encoder::add(std::uint64_t offset, std::span<const std::byte> block,
                         std::optional<codec::element_type> type, std::uint64_t ref_offset,
                         std::span<const std::byte> ref) {
    if (block.empty()) return;
    if (mode_ == write_compression::raw || (mode_ == write_compression::adaptive && !parallel_)) {
        add_raw(offset, block, type, ref_offset, ref.size());
        return;
    }
    if (mode_ == write_compression::adaptive) {
        // A worker is free: it codes a copy of the block (the caller's bytes change once this
        // returns). None is: the block goes raw now, and the writer does not wait.
        auto b = std::make_shared<std::vector<std::byte>>(block.begin(), block.end());
        auto r = std::make_shared<std::vector<std::byte>>(ref.begin(), ref.end());
        block_entry entry{offset,     static_cast<std::uint32_t>(block.size()), 0, 0,
                          ref_offset, static_cast<std::uint32_t>(ref.size())};
        bool taken = pipe_.try_push(
            [b, r, opts = options(type), entry] {
                encoded e{entry, {}, {}};
                e.frame = codec::encode(*b, *r, opts, &e.info);
                return e;
            },
            [this](encoded&& e) { consume(std::move(e)); });
        if (!taken) add_raw(offset, block, type, ref_offset, ref.size());
        return;
    }
    if (parallel_) { // the job outlives the caller's bytes
        add(offset, std::vector<std::byte>(block.begin(), block.end()), type, ref_offset,
            std::vector<std::byte>(ref.begin(), ref.end()));
        return;
    }
    encoded e{{offset, static_cast<std::uint32_t>(block.size()), 0, 0, ref_offset,
               static_cast<std::uint32_t>(ref.size())},
              {},
              {}};
    e.frame = codec::encode(block, ref, options(type), &e.info);
    consume(std::move(e));
}

void object_encoder::write_borrowed() {
    if (mode_ == write_compression::adaptive)
        pipe_.consume_ready([this](encoded&& e) { consume(std::move(e)); });
    writer_.write_gathered();
}

void object_encoder::add(std::uint64_t offset, std::vector<std::byte>&& block,
                         std::optional<codec::element_type> type, std::uint64_t ref_offset,
                         std::vector<std::byte>&& ref) {
    if (block.empty()) return;
    if (!parallel_ || mode_ != write_compression::compress) {
        add(offset, std::span<const std::byte>(block), type, ref_offset,
            std::span<const std::byte>(ref));
        write_borrowed(); // a raw frame may point into `block`, which is gone on return
        return;
    }
    block_entry entry{offset,     static_cast<std::uint32_t>(block.size()), 0, 0,
                      ref_offset, static_cast<std::uint32_t>(ref.size())};
    // Shared pointers: the job must be copyable for packaged_task.
    auto b = std::make_shared<std::vector<std::byte>>(std::move(block));
    auto r = std::make_shared<std::vector<std::byte>>(std::move(ref));
    pipe_.push(
        [b, r, opts = options(type), entry] {
            encoded e{entry, {}, {}};
            e.frame = codec::encode(*b, *r, opts, &e.info);
            return e;
        },
        [this](encoded&& e) { consume(std::move(e)); });
}

void object_encoder::drain() {
    pipe_.drain([this](encoded&& e) { consume(std::move(e)); });
}

void object_encoder::finish(format::file_layout layout, std::string base, std::uint64_t size) {
    drain();
    // Frames were appended as they were coded; the table lists blocks in file order.
    std::sort(blocks_.begin(), blocks_.end(),
              [](const block_entry& a, const block_entry& b) { return a.offset < b.offset; });
    object_footer f;
    f.logical_size = size;
    f.base_version = std::move(base);
    f.blocks = blocks_;
    f.layout = std::move(layout);
    f.elements = elements_;
    f.changed = changed_;
    f.uncompressed = wrote_raw_;
    writer_.finish(std::move(f));
    ctx_.counters.bytes_written += writer_.bytes_written();
}

std::vector<std::byte> object_encoder::read_back(std::size_t block) {
    const auto& b = blocks_.at(block);
    codec::decode_options o;
    o.max_raw_size = b.size;
    return codec::decode(writer_.read_frame(b.frame_pos, b.frame_len), {}, o);
}

} // namespace tpde::store

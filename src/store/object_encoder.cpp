#include "object_encoder.hpp"

#include <memory>

#include "tpde/codec/codec.hpp"

namespace tpde::store {

object_encoder::object_encoder(store_context& ctx, const std::string& shown, bool uncompressed)
    : ctx_(ctx), writer_(ctx.tmp_dir.get(), ctx.tmp_name("obj"), shown),
      // Raw frames are a hash: cheaper on the calling thread than a hand-off.
      pipe_(uncompressed ? nullptr : ctx.pool_for_this_thread(),
            2 * (ctx.pool ? ctx.pool->size() : 1)),
      uncompressed_(uncompressed), parallel_(!uncompressed && ctx.pool_for_this_thread()) {}

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

void object_encoder::add(std::uint64_t offset, std::span<const std::byte> block,
                         std::optional<codec::element_type> type, std::uint64_t ref_offset,
                         std::span<const std::byte> ref) {
    if (block.empty()) return;
    if (uncompressed_) { // a raw frame: hashed and written from where the bytes are
        auto header = codec::raw_frame_header(block, type.value_or(codec::element_type::bytes));
        block_entry entry{offset,     static_cast<std::uint32_t>(block.size()), 0, 0,
                          ref_offset, static_cast<std::uint32_t>(ref.size())};
        entry.frame_pos = writer_.append(header, block);
        entry.frame_len = static_cast<std::uint32_t>(header.size() + block.size());
        blocks_.push_back(entry);
        if (type && *type != codec::element_type::bytes) { // all changed: there is no base
            elements_ += block.size() / codec::width_of(*type);
            changed_ += block.size() / codec::width_of(*type);
        }
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

void object_encoder::add(std::uint64_t offset, std::vector<std::byte>&& block,
                         std::optional<codec::element_type> type, std::uint64_t ref_offset,
                         std::vector<std::byte>&& ref) {
    if (block.empty()) return;
    if (!parallel_) {
        add(offset, std::span<const std::byte>(block), type, ref_offset,
            std::span<const std::byte>(ref));
        if (uncompressed_) write_borrowed(); // `block` is gone when this returns
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
    object_footer f;
    f.logical_size = size;
    f.base_version = std::move(base);
    f.blocks = blocks_;
    f.layout = std::move(layout);
    f.elements = elements_;
    f.changed = changed_;
    f.uncompressed = uncompressed_;
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

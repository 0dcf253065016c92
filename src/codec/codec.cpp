#include "tpde/codec/codec.hpp"

#include <cstring>
#include <limits>
#include <optional>

#include "byte_io.hpp"
#include "element_probe.hpp"
#include "frame.hpp"
#include "patch.hpp"
#include "rans.hpp"
#include "residual.hpp"
#include "standalone.hpp"
#include "tpde/util/scratch.hpp"
#include "tpde/util/xxhash.hpp"

namespace tpde::codec {

const char* name_of(method m) {
    switch (m) {
    case method::raw:
        return "raw";
    case method::standalone:
        return "standalone";
    case method::dense:
        return "dense";
    case method::sparse:
        return "sparse";
    case method::patch:
        return "patch";
    }
    return "?";
}

namespace {

// Up to this size a block of any type also tries the patch method.
constexpr std::size_t patch_max_for_typed = 16 << 10;

// The part of the reference a block of `size` bytes is coded against: its first `size`
// bytes, zero-padded when it is shorter. Hashed with the used length as seed, so a padded
// and an unpadded reference never collide.
struct reference_view {
    std::span<const std::byte> bytes; // exactly `size` long
    std::span<const std::byte> used;
    std::vector<std::byte> padded;

    reference_view(std::span<const std::byte> ref, std::size_t size)
        : used(ref.first(std::min(ref.size(), size))) {
        if (used.size() == size) {
            bytes = used;
        } else {
            padded.assign(size, std::byte{0});
            detail::copy_bytes(padded, used);
            bytes = padded;
        }
    }
    std::uint64_t compute_hash() const {
        return XXH3_64bits_withSeed(used.data(), used.size(), used.size());
    }
};

std::uint64_t content_hash(std::span<const std::byte> b) {
    return XXH3_64bits(b.data(), b.size());
}

[[noreturn]] void throw_reference_mismatch() {
    throw reference_mismatch("reference differs from the one the frame was encoded against");
}

} // namespace

std::vector<std::byte> encode(std::span<const std::byte> block,
                              std::span<const std::byte> reference, const encode_options& opts,
                              encode_info* info) {
    if (block.size() > std::numeric_limits<std::uint32_t>::max())
        throw std::invalid_argument("tpde encode: block larger than 4 GiB");
    const element_type type = opts.type ? *opts.type : detail::probe_element_type(block, reference);
    const bool use_delta = !reference.empty() && (opts.allow_dense || opts.allow_sparse);
    // Bytes without element structure, and small blocks (pickles, headers), may have had
    // bytes inserted: LZ matching against the reference follows that, residuals cannot.
    // A block the caller typed as tensor data gets no patch: insertions happen in pickles and
    // headers, not inside tensors.
    const bool untyped = !opts.type || *opts.type == element_type::bytes;
    const bool use_patch = !reference.empty() && opts.allow_patch && untyped &&
                           (type == element_type::bytes || block.size() <= patch_max_for_typed);

    std::vector<std::byte> frame(frame_header_size);
    frame.reserve(frame_header_size + block.size() / 2);
    detail::frame_header h;
    h.type = type;
    h.raw_size = static_cast<std::uint32_t>(block.size());
    h.content_hash = content_hash(block);
    std::size_t changed = block.size() / width_of(type);

    bool coded = false;
    unsigned delta_lanes = 2;
    std::optional<reference_view> ref;
    if (use_delta || use_patch) ref.emplace(reference, block.size());
    // Without a reference, or when the delta barely helps (a parent that does not resemble
    // this block), the block is also coded on its own.
    auto delta_barely_helps = [&](std::size_t payload) { return payload > block.size() * 9 / 10; };
    std::optional<std::vector<std::byte>> standalone;
    auto code_standalone = [&] {
        standalone.emplace(frame_header_size);
        detail::encode_standalone(type, block, opts.zstd_level, *standalone);
    };
    if (use_delta) {
        // Where the delta's estimate says it barely helps, the standalone form is coded
        // first, and the delta's entropy coding (half its cost) only if it would still win.
        auto proceed = [&](std::size_t estimate) {
            if (!opts.allow_standalone || !delta_barely_helps(estimate)) return true;
            code_standalone();
            return estimate + frame_header_size < standalone->size();
        };
        auto r = detail::encode_delta(type, block, ref->bytes, opts.allow_dense, opts.allow_sparse,
                                      frame, opts.rans_lanes, proceed);
        changed = r.changed; // known from the analysis even where the delta was not coded
        if (r.written) {
            h.m = r.chosen;
            delta_lanes = r.lanes;
            coded = true;
        }
    }
    if (use_patch) {
        std::vector<std::byte> alt(frame_header_size);
        // Small blocks (pickles, headers) at level 9: 19 saved a few bytes per checkpoint and
        // cost 9-14% of the encode time of a pair (measured on traj/full, bf16, ft/bf16).
        detail::encode_patch(block, ref->used, block.size() <= patch_max_for_typed ? 9 : 3, alt);
        if (!coded || alt.size() < frame.size()) {
            frame = std::move(alt);
            h.m = method::patch;
            coded = true;
        }
    }
    if (coded) {
        h.flags = detail::flag_has_reference;
        if (h.m != method::patch && delta_lanes == detail::max_rans_lanes)
            h.flags |= detail::flag_rans16;
        h.reference_hash = ref->compute_hash();
    }
    if (opts.allow_standalone && !standalone &&
        (!coded || delta_barely_helps(frame.size() - frame_header_size)))
        code_standalone();
    if (standalone && (!coded || standalone->size() < frame.size())) {
        frame = std::move(*standalone);
        h.m = method::standalone;
        h.flags = 0;
        h.reference_hash = 0;
        coded = true;
    }
    if (!coded || frame.size() - frame_header_size >= block.size()) {
        frame.resize(frame_header_size);
        frame.insert(frame.end(), block.begin(), block.end());
        h.m = method::raw;
        h.flags = 0;
        h.reference_hash = 0;
    }
    h.payload_size = static_cast<std::uint32_t>(frame.size() - frame_header_size);
    detail::write_header(frame, h);
    if (info) *info = {h.m, type, block.size() / width_of(type), changed, frame.size()};
    return frame;
}

std::array<std::byte, frame_header_size> raw_frame_header(std::span<const std::byte> block,
                                                          element_type type) {
    if (block.size() > std::numeric_limits<std::uint32_t>::max())
        throw std::invalid_argument("tpde encode: block larger than 4 GiB");
    detail::frame_header h;
    h.m = method::raw;
    h.type = type;
    h.raw_size = h.payload_size = static_cast<std::uint32_t>(block.size());
    h.content_hash = content_hash(block);
    std::array<std::byte, frame_header_size> header;
    detail::write_header(header, block, h);
    return header;
}

namespace {

void decode_checked(const detail::frame_header& h, std::span<const std::byte> frame,
                    std::span<const std::byte> reference, std::span<std::byte> out) {
    auto payload = frame.subspan(frame_header_size);
    std::optional<reference_view> ref;
    // The reference is hashed only when decoding fails, to tell a wrong reference from a
    // corrupt frame: on the common path that hash would cost a tenth of the decode.
    auto wrong_reference = [&] { return ref && ref->compute_hash() != h.reference_hash; };
    try {
        switch (h.m) {
        case method::raw:
            detail::copy_bytes(out, payload);
            break;
        case method::standalone:
            detail::decode_standalone(h.type, payload, out);
            break;
        case method::dense:
        case method::sparse:
        case method::patch:
            if (reference.empty())
                throw reference_mismatch("frame is a delta but no reference was given");
            ref.emplace(reference, h.raw_size);
            if (h.m == method::patch)
                detail::decode_patch(payload, ref->used, out);
            else
                detail::decode_delta(h.m, h.type, payload, ref->bytes, out,
                                     (h.flags & detail::flag_rans16) ? detail::max_rans_lanes : 2);
            break;
        }
    } catch (const reference_mismatch&) {
        throw;
    } catch (const decode_error&) {
        if (wrong_reference()) throw_reference_mismatch();
        throw;
    }
    if (content_hash(out) != h.content_hash) {
        if (wrong_reference()) throw_reference_mismatch();
        throw decode_error("corrupt frame: decoded bytes fail their checksum");
    }
}

detail::frame_header checked_header(std::span<const std::byte> frame, const decode_options& opts) {
    auto h = detail::read_header(frame, opts.verify_frame_check);
    if (h.raw_size > opts.max_raw_size)
        throw decode_error("corrupt frame: claims " + std::to_string(h.raw_size) +
                           " decoded bytes, more than the limit of " +
                           std::to_string(opts.max_raw_size));
    return h;
}

} // namespace

std::vector<std::byte> decode(std::span<const std::byte> frame,
                              std::span<const std::byte> reference, const decode_options& opts) {
    std::vector<std::byte> out;
    decode(frame, reference, out, opts);
    return out;
}

std::span<std::byte> decode(std::span<const std::byte> frame, std::span<const std::byte> reference,
                            std::vector<std::byte>& buffer, const decode_options& opts) {
    const auto h = checked_header(frame, opts);
    const auto out = util::grown_to(buffer, h.raw_size);
    decode_checked(h, frame, reference, out);
    return out;
}

void decode_into(std::span<const std::byte> frame, std::span<const std::byte> reference,
                 std::span<std::byte> out, const decode_options& opts) {
    const auto h = checked_header(frame, opts);
    if (h.raw_size != out.size())
        throw decode_error("corrupt frame: decodes to " + std::to_string(h.raw_size) +
                           " bytes where " + std::to_string(out.size()) + " were expected");
    decode_checked(h, frame, reference, out);
}

frame_summary inspect(std::span<const std::byte> frame) {
    const auto h = detail::read_header(frame);
    return {h.m, h.type, h.raw_size, h.payload_size, bool(h.flags & detail::flag_has_reference)};
}

} // namespace tpde::codec

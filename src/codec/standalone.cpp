#include "standalone.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <zstd.h>

#include "byte_io.hpp"
#include "byte_planes.hpp"
#include "tpde/util/scratch.hpp"
#include "zstd_context.hpp"

namespace tpde::codec::detail {
namespace {

enum class plane_mode : std::uint8_t { raw = 0, zstd = 1 };

// Whether a byte plane looks like uniformly random bytes (order-0 entropy of an even sample
// above 7.9 bits): the low mantissa bytes of trained weights do. zstd is not tried on them:
// on a real checkpoint's standalone blocks it saved 0.03% there, and trying took about a
// sixth of the encode time. (A sample of 4096 uniform bytes measures ~7.95 bits.)
bool looks_random(std::span<const std::byte> plane) {
    constexpr std::size_t samples = 4096;
    if (plane.size() < samples) return false; // small: zstd is cheap, and may find runs
    std::array<std::uint32_t, 256> count{};
    const std::size_t step = plane.size() / samples;
    for (std::size_t i = 0; i < samples; ++i) ++count[std::to_integer<unsigned>(plane[i * step])];
    double bits = 0;
    for (auto c : count)
        if (c) bits -= c * std::log2(static_cast<double>(c) / samples);
    return bits / samples > 7.9;
}

// Compresses one byte plane into `packed`; returns its size, or a zstd error code.
std::size_t compress_plane(element_type t, std::span<const std::byte> plane, int zstd_level,
                           std::span<std::byte> packed) {
    ZSTD_CCtx* c = thread_cctx();
    ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, zstd_level);
    if (t != element_type::bytes) {
        // The planes of numbers (exponents, high mantissa bytes) compress by their byte
        // frequencies, not by repeats: zstd held to long matches and a tiny match table codes
        // them almost as pure Huffman. On the planes of real checkpoints (fp32, bf16) that is
        // 5-10% smaller than level 1 and 2-3x faster to encode, ~2x faster to decode.
        ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, 7);
        ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, 6);
    }
    return ZSTD_compress2(c, packed.data(), packed.size(), plane.data(), plane.size());
}

} // namespace

void encode_standalone(element_type t, std::span<const std::byte> block, int zstd_level,
                       std::vector<std::byte>& payload) {
    const std::size_t w = width_of(t);
    const std::size_t n = block.size() / w;
    byte_sink out(payload);
    out.put_bytes(block.subspan(n * w));
    thread_local std::vector<std::byte> plane_scratch, packed_scratch;
    const auto planes = util::grown_to(plane_scratch, n * w);
    split_byte_planes(block.data(), n, w, planes.data());
    const auto packed = util::grown_to(packed_scratch, ZSTD_compressBound(n));
    for (std::size_t b = 0; b < w && n > 0; ++b) {
        const std::span<const std::byte> plane = planes.subspan(b * n, n);
        std::size_t c = looks_random(plane) ? n : compress_plane(t, plane, zstd_level, packed);
        if (!ZSTD_isError(c) && c < n) {
            out.put(plane_mode::zstd);
            out.put(static_cast<std::uint32_t>(c));
            out.put_bytes(packed.first(c));
        } else {
            out.put(plane_mode::raw);
            out.put_bytes(plane);
        }
    }
}

void decode_standalone(element_type t, std::span<const std::byte> payload,
                       std::span<std::byte> out) {
    const std::size_t w = width_of(t);
    const std::size_t n = out.size() / w;
    byte_source in(payload);
    auto tail = in.get_bytes(out.size() - n * w);
    copy_bytes(out.subspan(n * w), tail);
    thread_local std::vector<std::byte> plane_scratch;
    const auto planes = util::grown_to(plane_scratch, n * w);
    for (std::size_t b = 0; b < w && n > 0; ++b) {
        const auto plane = planes.subspan(b * n, n);
        auto mode = in.get<std::uint8_t>();
        if (mode == static_cast<std::uint8_t>(plane_mode::raw)) {
            auto bytes = in.get_bytes(n);
            copy_bytes(plane, bytes);
        } else if (mode == static_cast<std::uint8_t>(plane_mode::zstd)) {
            auto len = in.get<std::uint32_t>();
            auto bytes = in.get_bytes(len);
            // dst capacity is the plane size: zstd refuses to write more.
            std::size_t d = ZSTD_decompressDCtx(thread_dctx(), plane.data(), n, bytes.data(), len);
            if (ZSTD_isError(d) || d != n)
                throw decode_error("corrupt frame: byte plane does not decompress");
        } else {
            throw decode_error("corrupt frame: bad byte plane mode");
        }
    }
    if (in.remaining() != 0) throw decode_error("corrupt frame: trailing bytes after planes");
    merge_byte_planes(planes.data(), n, w, out.data());
}

} // namespace tpde::codec::detail

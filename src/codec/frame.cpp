#include "frame.hpp"

#include <cstring>

#include "byte_io.hpp"
#include "tpde/util/xxhash.hpp"

namespace tpde::codec::detail {
namespace {
constexpr char magic[4] = {'T', 'P', 'D', 'F'};
constexpr std::size_t checked_bytes = 32;

std::uint64_t frame_check(const std::byte* header, std::span<const std::byte> payload) {
    auto seed = XXH3_64bits(header, checked_bytes);
    return XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
}
std::uint64_t frame_check(std::span<const std::byte> frame) {
    return frame_check(frame.data(), frame.subspan(frame_header_size));
}
} // namespace

void write_header(std::span<std::byte> frame, const frame_header& h) {
    write_header(frame.first(frame_header_size), frame.subspan(frame_header_size), h);
}

void write_header(std::span<std::byte> header, std::span<const std::byte> payload,
                  const frame_header& h) {
    std::byte* p = header.data();
    std::memcpy(p, magic, 4);
    p[4] = std::byte{format_version};
    p[5] = static_cast<std::byte>(h.m);
    p[6] = static_cast<std::byte>(h.type);
    p[7] = std::byte{h.flags};
    store_le(p + 8, h.raw_size);
    store_le(p + 12, h.payload_size);
    store_le(p + 16, h.content_hash);
    store_le(p + 24, h.reference_hash);
    store_le(p + 32, frame_check(p, payload));
}

frame_header read_header(std::span<const std::byte> frame, bool verify_check) {
    if (frame.size() < frame_header_size)
        throw decode_error("corrupt frame: shorter than its header");
    const std::byte* p = frame.data();
    if (std::memcmp(p, magic, 4) != 0) throw decode_error("corrupt frame: bad magic");
    if (std::to_integer<std::uint8_t>(p[4]) != format_version)
        throw decode_error("unsupported frame format version " +
                           std::to_string(std::to_integer<int>(p[4])));
    frame_header h;
    auto m = std::to_integer<std::uint8_t>(p[5]);
    auto t = std::to_integer<std::uint8_t>(p[6]);
    h.flags = std::to_integer<std::uint8_t>(p[7]);
    if (m >= method_count || !is_valid(t) || (h.flags & ~(flag_has_reference | flag_rans16)))
        throw decode_error("corrupt frame: bad method, type or flags");
    h.m = static_cast<method>(m);
    h.type = static_cast<element_type>(t);
    h.raw_size = load_le<std::uint32_t>(p + 8);
    h.payload_size = load_le<std::uint32_t>(p + 12);
    h.content_hash = load_le<std::uint64_t>(p + 16);
    h.reference_hash = load_le<std::uint64_t>(p + 24);
    if (frame.size() - frame_header_size != h.payload_size)
        throw decode_error("corrupt frame: length does not match header (truncated?)");
    if (verify_check && load_le<std::uint64_t>(p + 32) != frame_check(frame))
        throw decode_error("corrupt frame: frame checksum mismatch");
    bool delta = h.m == method::dense || h.m == method::sparse || h.m == method::patch;
    if (delta != bool(h.flags & flag_has_reference))
        throw decode_error("corrupt frame: reference flag does not match method");
    if ((h.flags & flag_rans16) && h.m != method::dense && h.m != method::sparse)
        throw decode_error("corrupt frame: lane flag on a method without rANS");
    if (h.m == method::raw && h.payload_size != h.raw_size)
        throw decode_error("corrupt frame: raw payload size mismatch");
    return h;
}

} // namespace tpde::codec::detail

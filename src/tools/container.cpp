#include "container.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "tpde/codec/codec.hpp"

namespace tpde::tools {
namespace {
constexpr char magic[8] = {'T', 'P', 'D', 'E', 'F', 'I', 'L', 'E'};
constexpr std::uint32_t version = 1;

template <typename T>
void put(std::byte* p, T v) {
    std::memcpy(p, &v, sizeof v);
}
template <typename T>
T get(const std::byte* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
} // namespace

// magic(8) version(4) block_size(4) total_size(8) flags(4) reserved(4)
std::vector<std::byte> write_container_header(const container_header& h) {
    std::vector<std::byte> b(container_header_size);
    std::memcpy(b.data(), magic, 8);
    put(b.data() + 8, version);
    put(b.data() + 12, h.block_size);
    put(b.data() + 16, h.total_size);
    put<std::uint32_t>(b.data() + 24, h.has_reference ? 1 : 0);
    return b;
}

container_header read_container_header(const input_file& in) {
    auto name = in.path().string();
    if (in.size() < container_header_size)
        throw std::runtime_error(name + " is not a tpde file (too short)");
    auto b = in.read_at(0, container_header_size);
    if (std::memcmp(b.data(), magic, 8) != 0)
        throw std::runtime_error(name + " is not a tpde file (bad magic)");
    if (get<std::uint32_t>(b.data() + 8) != version)
        throw std::runtime_error(name + ": unsupported tpde file version");
    container_header h;
    h.block_size = get<std::uint32_t>(b.data() + 12);
    h.total_size = get<std::uint64_t>(b.data() + 16);
    auto flags = get<std::uint32_t>(b.data() + 24);
    if (h.block_size == 0 || h.block_size > max_block_size || flags > 1)
        throw std::runtime_error(name + ": corrupt tpde file header");
    h.has_reference = flags & 1;
    return h;
}

std::span<const std::byte> read_frame(const input_file& in, std::uint64_t& offset,
                                      std::uint32_t block_size) {
    if (in.size() - offset < 4)
        throw std::runtime_error(in.path().string() + ": truncated (frame length missing)");
    std::byte len_bytes[4];
    in.read_exact(offset, len_bytes);
    auto len = get<std::uint32_t>(len_bytes);
    if (len > block_size + codec::frame_header_size || len > in.size() - offset - 4)
        throw std::runtime_error(in.path().string() + ": truncated or corrupt frame at offset " +
                                 std::to_string(offset));
    auto frame = in.view(offset + 4, len);
    offset += 4 + len;
    return frame;
}

} // namespace tpde::tools

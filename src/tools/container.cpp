#include "container.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tpde/codec/codec.hpp"
#include "tpde/util/little_endian.hpp"

namespace tpde::tools {
namespace {
constexpr char magic[8] = {'T', 'P', 'D', 'E', 'F', 'I', 'L', 'E'};
constexpr std::uint32_t version = 2;

using util::load_le;
using util::store_le;
} // namespace

// magic(8) version(4) block_size(4) total_size(8) flags(4) reserved(4)
std::vector<std::byte> write_container_header(const container_header& h) {
    std::vector<std::byte> b(container_header_size);
    std::memcpy(b.data(), magic, 8);
    store_le(b.data() + 8, version);
    store_le(b.data() + 12, h.block_size);
    store_le(b.data() + 16, h.total_size);
    store_le<std::uint32_t>(b.data() + 24, h.has_reference ? 1 : 0);
    return b;
}

container_header read_container_header(const input_file& in) {
    auto name = in.path().string();
    if (in.size() < container_header_size)
        throw std::runtime_error(name + " is not a tpde file (too short)");
    auto b = in.view(0, container_header_size);
    if (std::memcmp(b.data(), magic, 8) != 0)
        throw std::runtime_error(name + " is not a tpde file (bad magic)");
    if (load_le<std::uint32_t>(b.data() + 8) != version)
        throw std::runtime_error(name + ": unsupported tpde file version");
    container_header h;
    h.block_size = load_le<std::uint32_t>(b.data() + 12);
    h.total_size = load_le<std::uint64_t>(b.data() + 16);
    auto flags = load_le<std::uint32_t>(b.data() + 24);
    if (h.block_size == 0 || h.block_size > max_block_size || flags > 1)
        throw std::runtime_error(name + ": corrupt tpde file header");
    h.has_reference = flags & 1;
    return h;
}

void write_block_record(output_file& out, const block_record& r) {
    std::array<std::byte, block_record_header_size> h;
    store_le(h.data(), static_cast<std::uint32_t>(r.frame.size()));
    store_le(h.data() + 4, r.ref_offset);
    store_le(h.data() + 12, r.ref_size);
    out.write({h, r.frame});
}

block_record read_block_record(const input_file& in, std::uint64_t& offset,
                               std::uint32_t block_size, std::vector<std::byte>& frame) {
    auto name = in.path().string();
    if (offset > in.size() || in.size() - offset < block_record_header_size)
        throw std::runtime_error(name + ": truncated (block record missing at offset " +
                                 std::to_string(offset) + ")");
    std::array<std::byte, block_record_header_size> h;
    in.read_exact(offset, h);
    block_record r;
    auto len = load_le<std::uint32_t>(h.data());
    r.ref_offset = load_le<std::uint64_t>(h.data() + 4);
    r.ref_size = load_le<std::uint32_t>(h.data() + 12);
    std::uint64_t body = offset + block_record_header_size;
    if (len > block_size + codec::frame_header_size || r.ref_size > block_size ||
        len > in.size() - body)
        throw std::runtime_error(name + ": truncated or corrupt block record at offset " +
                                 std::to_string(offset));
    r.frame = in.read(body, len, frame);
    offset = body + len;
    return r;
}

} // namespace tpde::tools

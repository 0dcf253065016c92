// libFuzzer target for the store's object files. The input is a whole object file; it is
// opened the way the store opens one (object_file on a descriptor, here a memfd) and every
// block's frame is read and decoded. A damaged object must be refused with store_error or
// codec::decode_error; any other exception, a crash, a sanitizer report, an allocation past
// the rss limit or a hang is a bug.
//
// The footer is guarded by an XXH3 checksum that the fuzzer cannot forge, so when the tail
// points at an in-bounds footer the harness rewrites that checksum to match (as fuzz_decode
// turns verify_frame_check off): mutations of the footer then reach decode_footer and the
// block checks. The tail's footer offset and length reach object_file exactly as mutated.
#include <cstdlib>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/store/object_file.hpp"
#include "tpde/codec/codec.hpp"
#include "tpde/util/little_endian.hpp"
#include "tpde/util/xxhash.hpp"

using namespace tpde;
using util::load_le;
using util::store_le;

namespace {

int memfd() {
    static const int fd = [] {
        int f = ::memfd_create("fuzz_object", MFD_CLOEXEC);
        if (f < 0) std::abort();
        return f;
    }();
    return fd;
}

void put_file(std::span<const std::byte> bytes) {
    if (::ftruncate(memfd(), 0) != 0) std::abort();
    std::size_t at = 0;
    while (at < bytes.size()) {
        auto n = ::pwrite(memfd(), bytes.data() + at, bytes.size() - at, static_cast<off_t>(at));
        if (n <= 0) std::abort();
        at += static_cast<std::size_t>(n);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto* p = reinterpret_cast<const std::byte*>(data);
    std::vector<std::byte> file(p, p + size);

    // The footer alone: the one the tail points at when it is in bounds (its checksum then
    // fixed up), else the whole input. Whatever decodes must encode back to the same bytes.
    std::span<const std::byte> footer = file;
    if (size >= store::object_header_size + store::object_tail_size) {
        auto* tail = file.data() + size - store::object_tail_size;
        const auto pos = load_le<std::uint64_t>(tail), len = load_le<std::uint64_t>(tail + 8);
        const auto end = size - store::object_tail_size;
        if (pos <= end && len == end - pos) {
            footer = std::span<const std::byte>(file).subspan(pos, len);
            store_le<std::uint64_t>(tail + 16, XXH3_64bits(footer.data(), footer.size()));
        }
    }
    try {
        auto f = store::decode_footer(footer, "fuzz");
        auto again = store::encode_footer(f);
        if (!std::equal(again.begin(), again.end(), footer.begin(), footer.end())) std::abort();
    } catch (const store::store_error&) {
    }

    // The whole object, then every frame it lists.
    put_file(file);
    try {
        store::object_file obj(store::sys::fd(::dup(memfd())), "fuzz");
        const auto& blocks = obj.footer().blocks;
        for (std::size_t i = 0; i < blocks.size(); ++i) {
            const auto& b = blocks[i];
            // object_file promised this frame lies between the header and the tail.
            if (b.frame_pos < store::object_header_size ||
                b.frame_len > size - store::object_tail_size ||
                b.frame_pos > size - store::object_tail_size - b.frame_len)
                std::abort();
            auto frame = obj.read_frame(i);
            try {
                codec::decode_options o;
                o.max_raw_size = b.size;
                auto out = codec::decode(frame, {}, o);
                if (out.size() > b.size) std::abort();
            } catch (const codec::decode_error&) {
            }
        }
    } catch (const store::store_error&) {
    }
    return 0;
}

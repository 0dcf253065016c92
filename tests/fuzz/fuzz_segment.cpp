// libFuzzer targets for the checkpoint-format parsers, one executable per parser (chosen by
// TPDE_FUZZ_PARSER at compile time). A parser may reject its input (format_error); whatever
// it accepts must be a layout covering the file exactly, and segment_file() must never throw.
#include <cstdlib>

#include "../../src/format/layouts.hpp"
#include "../../src/format/parse_util.hpp"
#include "../../src/format/pickle_storages.hpp"
#include "tpde/format/dcp.hpp"
#include "tpde/format/segment.hpp"
#include "tpde/format/stream_segmenter.hpp"

using namespace tpde::format;

namespace {

void check_covers(const file_layout& l, std::size_t size) {
    std::uint64_t at = 0;
    for (const auto& s : l.segments) {
        if (s.offset != at || s.length == 0) std::abort();
        at += s.length;
    }
    if (at != size) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::byte> b(reinterpret_cast<const std::byte*>(data), size);
    try {
#if TPDE_FUZZ_PARSER == 1
        check_covers(detail::torch_zip_layout(b), size);
#elif TPDE_FUZZ_PARSER == 2
        check_covers(detail::safetensors_layout(b), size);
#elif TPDE_FUZZ_PARSER == 3
        check_covers(detail::npy_layout(b), size);
        check_covers(detail::npz_layout(b), size);
#elif TPDE_FUZZ_PARSER == 4
        check_covers(detail::distcp_layout(b), size);
#elif TPDE_FUZZ_PARSER == 5
        (void)detail::storage_types(b);
#elif TPDE_FUZZ_PARSER == 6
        // Fed in chunks whose size the input picks: every split must end in a layout that
        // covers the file and agrees with the segments handed out on the way.
        if (!b.empty()) {
            std::size_t chunk = 1 + std::to_integer<std::size_t>(b[0]) * 7;
            stream_segmenter seg;
            std::vector<segment> handed;
            for (std::size_t off = 0; off < b.size(); off += chunk)
                for (auto& s : seg.feed(b.subspan(off, std::min(chunk, b.size() - off))))
                    handed.push_back(s);
            auto l = seg.finish();
            check_covers(l, size);
            for (std::size_t i = 0; i < handed.size() && i < l.segments.size(); ++i)
                if (handed[i].offset != l.segments[i].offset ||
                    handed[i].name != l.segments[i].name ||
                    handed[i].tensor != l.segments[i].tensor)
                    std::abort();
        }
#elif TPDE_FUZZ_PARSER == 7
        // A DCP .metadata: whatever it says, naming a layout by it keeps the layout covering
        // the file, splits only untyped segments and never names a segment outside an item.
        if (auto md = read_dcp_metadata(b)) {
            for (const auto& it : md->items)
                if (it.name.empty() || it.offset > UINT64_MAX - it.length) std::abort();
            const std::uint64_t file_size = 1u << 16;
            file_layout typed;
            for (std::uint64_t at = 0; at < file_size; at += 4096)
                typed.segments.push_back(
                    {"s" + std::to_string(at), at, 4096,
                     at % 8192 ? std::nullopt : std::optional(tpde::codec::element_type::f32)});
            for (auto l : {generic_layout(file_size), typed}) {
                name_dcp_items(l, *md, "__0_0.distcp");
                check_covers(l, file_size);
                for (const auto& s : l.segments) {
                    if (s.tensor.empty()) continue;
                    bool inside = false;
                    for (const auto& it : md->items)
                        inside |= s.offset >= it.offset && s.offset - it.offset < it.length &&
                                  s.length <= it.offset + it.length - s.offset;
                    if (!inside) std::abort();
                }
            }
        }
#endif
    } catch (const detail::format_error&) {
    }
    auto l = segment_file(b);
    check_covers(l, size);
    return 0;
}

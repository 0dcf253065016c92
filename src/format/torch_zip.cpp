// torch.save archives (and the numpy .npz and DCP variants built on zips).
#include <algorithm>

#include "layouts.hpp"
#include "parse_util.hpp"
#include "pickle_storages.hpp"

namespace tpde::format::detail {

void append_zip_segments(std::span<const std::byte> file, const zip_archive& z,
                         const std::string& prefix, file_layout& out) {
    std::map<std::string, storage_info> types;
    for (const auto& e : z.entries) {
        if (record_name_without_root(e.name) != "data.pkl" || e.method != 0) continue;
        try {
            types = storage_types(sub(file, e.data_offset, e.size));
        } catch (const format_error&) {
            types.clear(); // segments stay; the codec probes element types instead
        }
    }
    for (const auto& e : z.entries) {
        std::string name = prefix + record_name_without_root(e.name);
        segment s{name, e.data_offset, e.size, {}};
        auto rel = record_name_without_root(e.name);
        if (e.method == 0 && rel.starts_with("data/")) {
            auto it = types.find(rel.substr(5));
            if (it != types.end()) {
                s.type = it->second.type;
                if (!it->second.name.empty()) s.tensor = prefix + it->second.name;
                if (it->second.bytes == e.size) s.row_bytes = it->second.row_bytes;
            }
        }
        out.segments.push_back({name + "#header",
                                e.header_offset,
                                e.data_offset - e.header_offset,
                                {},
                                s.tensor.empty() ? "" : s.tensor + "#header"});
        out.segments.push_back(std::move(s));
    }
    out.segments.push_back({prefix + "#directory", z.cd_offset, z.end - z.cd_offset, {}});
}

file_layout torch_zip_layout(std::span<const std::byte> file) {
    auto z = read_zip_at(file, find_last_eocd(file));
    if (z.start != 0) throw format_error("zip does not start at the beginning of the file");
    bool has_pickle = std::any_of(z.entries.begin(), z.entries.end(), [](const zip_entry& e) {
        return record_name_without_root(e.name) == "data.pkl";
    });
    if (!has_pickle) throw format_error("zip without data.pkl is not a torch archive");
    file_layout l;
    l.kind = layout_kind::torch_zip;
    append_zip_segments(file, z, "", l);
    close_gaps(l, file.size());
    return l;
}

file_layout distcp_layout(std::span<const std::byte> file) {
    // A concatenation of torch.save archives (one per item) and raw blobs; without the
    // .metadata at hand, find each archive from its end record.
    file_layout l;
    l.kind = layout_kind::distcp;
    std::size_t item = 0;
    std::uint64_t covered = 0;
    for (auto eocd : find_all_eocd(file)) {
        if (eocd < covered) continue;
        zip_archive z;
        try {
            z = read_zip_at(file, eocd);
        } catch (const format_error&) {
            continue; // "PK\5\6" inside tensor data
        }
        if (z.start < covered) continue;
        // Named as the stream segmenter names them: the first archive plainly, then item1/...
        append_zip_segments(file, z, item ? "item" + std::to_string(item) + "/" : "", l);
        ++item;
        covered = z.end;
    }
    if (item < 2) throw format_error("not a concatenation of torch archives");
    close_gaps(l, file.size());
    return l;
}

} // namespace tpde::format::detail

// DCP .metadata (a pickled torch.distributed.checkpoint.metadata.Metadata) -> item names.
#include <algorithm>
#include <spdlog/spdlog.h>

#include "parse_util.hpp"
#include "pickle_machine.hpp"
#include "tpde/format/dcp.hpp"

namespace tpde::format {
namespace {

using detail::pickle::child;
using detail::pickle::kind;
using detail::pickle::machine;
using detail::pickle::role;
using detail::pickle::value;

constexpr std::size_t max_name = 1024;

// The value of key `name` in a dict.
const value* entry(const machine& m, const value& dict, std::string_view name) {
    if (dict.k != kind::dict) return nullptr;
    const value* found = nullptr;
    const value* key = nullptr;
    m.for_each_child(dict.ref, [&](const child& c) {
        if (c.v.r == role::key)
            key = &c.v;
        else if (c.v.r == role::val && !found && key && key->k == kind::text &&
                 m.text(*key) == name)
            found = &c.v;
    });
    return found;
}

// Attribute `name` of an object rebuilt by NEWOBJ/REDUCE + BUILD (a dataclass: its __dict__
// as state, or (state, slotstate)), or the entry of a dict.
const value* attr(const machine& m, const value& obj, std::string_view name) {
    if (obj.k == kind::dict) return entry(m, obj, name);
    if (obj.k != kind::call) return nullptr;
    const value* found = nullptr;
    m.for_each_child(obj.ref, [&](const child& c) {
        if (found || c.v.r != role::state) return;
        if (c.v.k == kind::dict) found = entry(m, c.v, name);
        for (std::size_t i = 0; !found && i < m.item_count(c.v); ++i)
            if (auto* part = m.item(c.v, i)) found = entry(m, *part, name);
    });
    return found;
}

std::optional<std::uint64_t> unsigned_of(const machine& m, const value* v) {
    if (!v || v->k != kind::integer || m.integer(*v) < 0) return std::nullopt;
    return static_cast<std::uint64_t>(m.integer(*v));
}

// "@o1,o2" for a chunk offset (a torch.Size: REDUCE(torch.Size, ((o1, o2),))) that is not all
// zeros; "" otherwise.
std::string chunk_suffix(const machine& m, const value* offset) {
    if (!offset || offset->k != kind::call) return {};
    const value* args = nullptr;
    m.for_each_child(offset->ref, [&](const child& c) {
        if (c.v.r == role::args) args = &c.v;
    });
    const value* dims = args ? m.item(*args, 0) : nullptr;
    if (!dims) return {};
    std::string s;
    bool nonzero = false;
    for (std::size_t i = 0; i < m.item_count(*dims) && s.size() <= max_name; ++i) {
        auto* d = m.item(*dims, i);
        if (!d || d->k != kind::integer) return {};
        nonzero |= m.integer(*d) != 0;
        s += (i ? "," : "@") + std::to_string(m.integer(*d));
    }
    return nonzero ? s : std::string{};
}

} // namespace

std::optional<dcp_metadata> read_dcp_metadata(std::span<const std::byte> bytes, std::string* why) {
    try {
        machine m(bytes);
        auto root = m.run();
        if (m.lean()) throw detail::format_error("metadata too large to follow");
        auto* storage = attr(m, root, "storage_data");
        if (!storage || storage->k != kind::dict)
            throw detail::format_error("no storage_data dict in the metadata");
        dcp_metadata md;
        const value* key = nullptr;
        m.for_each_child(storage->ref, [&](const child& c) {
            if (c.v.r == role::key) {
                key = &c.v;
                return;
            }
            if (c.v.r != role::val || !key) return;
            auto* fqn = attr(m, *key, "fqn");
            auto* path = attr(m, c.v, "relative_path");
            auto offset = unsigned_of(m, attr(m, c.v, "offset"));
            auto length = unsigned_of(m, attr(m, c.v, "length"));
            if (!fqn || fqn->k != kind::text || !path || path->k != kind::text || !offset ||
                !length || *offset > UINT64_MAX - *length || m.text(*fqn).size() > max_name ||
                m.text(*fqn).empty())
                return; // an entry this reader does not follow: that item stays unnamed
            md.items.push_back(
                {std::string(m.text(*path)), *offset, *length,
                 std::string(m.text(*fqn)) + chunk_suffix(m, attr(m, *key, "offset"))});
        });
        return md;
    } catch (const std::exception& e) { // format_error, or bad_alloc from a hostile file
        if (why) *why = e.what();
        return std::nullopt;
    }
}

std::size_t name_dcp_items(file_layout& layout, const dcp_metadata& md,
                           std::string_view file_name) {
    std::vector<const dcp_item*> items;
    for (const auto& it : md.items) {
        std::string_view f = it.file;
        if (f == file_name || (f.size() > file_name.size() && f.ends_with(file_name) &&
                               f[f.size() - file_name.size() - 1] == '/'))
            items.push_back(&it);
    }
    std::sort(items.begin(), items.end(),
              [](const dcp_item* a, const dcp_item* b) { return a->offset < b->offset; });
    auto& segs = layout.segments;
    const std::uint64_t size = segs.empty() ? 0 : segs.back().offset + segs.back().length;
    // Index of the segment holding `at`, or segs.size().
    auto holding = [&](std::uint64_t at) {
        auto it = std::upper_bound(segs.begin(), segs.end(), at,
                                   [](std::uint64_t a, const segment& s) { return a < s.offset; });
        return static_cast<std::size_t>(it - segs.begin()) - 1;
    };
    // A boundary at `at`: splits an untyped segment that holds it; false if a typed one does.
    auto cut = [&](std::uint64_t at) {
        if (at == 0 || at >= size) return true;
        auto i = holding(at);
        if (segs[i].offset == at) return true;
        if (segs[i].type) return false;
        segment rest = segs[i];
        rest.offset = at;
        rest.length = segs[i].offset + segs[i].length - at;
        rest.name += "@" + std::to_string(at - segs[i].offset);
        rest.row_bytes = 0;
        segs[i].length = at - segs[i].offset;
        segs.insert(segs.begin() + static_cast<std::ptrdiff_t>(i) + 1, std::move(rest));
        return true;
    };
    std::size_t named = 0;
    std::uint64_t done = 0;
    for (const auto* it : items) {
        if (it->length == 0 || it->offset < done || it->offset > size ||
            size - it->offset < it->length)
            continue;
        if (!cut(it->offset) || !cut(it->offset + it->length)) continue;
        done = it->offset + it->length;
        for (auto i = holding(it->offset); i < segs.size() && segs[i].offset < done; ++i) {
            auto& s = segs[i];
            if (s.offset == it->offset && s.length == it->length) {
                s.tensor = it->name; // the whole item: raw bytes
                continue;
            }
            // Inside a torch.save archive: its record names without the item prefix.
            std::string_view local = s.name;
            if (local.starts_with("item")) {
                auto slash = local.find('/');
                if (slash != std::string_view::npos &&
                    std::all_of(local.begin() + 4,
                                local.begin() + static_cast<std::ptrdiff_t>(slash),
                                [](char c) { return c >= '0' && c <= '9'; }))
                    local.remove_prefix(slash + 1);
            }
            s.tensor = it->name + "/" + std::string(local);
        }
        ++named;
    }
    spdlog::debug("dcp: {} of {} items of {} named from the metadata", named, items.size(),
                  file_name);
    return named;
}

} // namespace tpde::format

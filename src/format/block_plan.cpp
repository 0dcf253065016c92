#include "tpde/format/block_plan.hpp"

#include <algorithm>
#include <string_view>
#include <unordered_map>

namespace tpde::format {

const char* name_of(match_kind m) {
    switch (m) {
    case match_kind::by_name:
        return "name";
    case match_kind::by_offset:
        return "offset";
    case match_kind::none:
        return "none";
    }
    return "?";
}

namespace {

struct reference_range {
    match_kind how{match_kind::none};
    std::uint64_t offset{0}, length{0};
};

} // namespace

std::vector<planned_block> plan_blocks(const file_layout& next, const file_layout* parent,
                                       std::uint64_t parent_size, const plan_options& opts) {
    std::unordered_map<std::string_view, const segment*> by_name;
    if (parent)
        for (const auto& s : parent->segments) by_name.emplace(s.name, &s);
    auto reference_of = [&](const segment& s) -> reference_range {
        if (!parent) return {};
        if (auto it = by_name.find(s.name); it != by_name.end())
            return {match_kind::by_name, it->second->offset, it->second->length};
        if (s.offset < parent_size)
            return {match_kind::by_offset, s.offset, parent_size - s.offset};
        return {};
    };
    auto add = [](std::vector<planned_block>& plan, planned_block b, const reference_range& ref,
                  std::uint64_t rel) {
        if (ref.how != match_kind::none && rel < ref.length) {
            b.match = ref.how;
            b.ref_offset = ref.offset + rel;
            b.ref_size =
                static_cast<std::uint32_t>(std::min<std::uint64_t>(b.size, ref.length - rel));
        }
        plan.push_back(b);
    };

    const std::uint64_t bs = std::max<std::uint32_t>(opts.block_size, opts.small_segment);
    std::vector<planned_block> plan;
    for (std::size_t si = 0; si < next.segments.size();) {
        const segment& s = next.segments[si];
        if (s.length < opts.small_segment) {
            // A run of small segments (zip headers, descriptors, tiny tensors) becomes one
            // block, coded against the parent's bytes from the run's first segment on: a
            // frame per 16-byte descriptor would cost more than it holds. The run ends where
            // the parent's layout differs (a grown pickle), so one reference range fits it.
            auto ref = reference_of(s);
            auto same_place = [&](const segment& n) {
                if (ref.how != match_kind::by_name) return true;
                auto r = reference_of(n);
                return r.how == match_kind::by_name && r.offset - ref.offset == n.offset - s.offset;
            };
            std::size_t last = si;
            std::uint64_t len = s.length;
            while (last + 1 < next.segments.size() &&
                   next.segments[last + 1].length < opts.small_segment &&
                   len + next.segments[last + 1].length <= bs &&
                   same_place(next.segments[last + 1]))
                len += next.segments[++last].length;
            planned_block b;
            b.offset = s.offset;
            b.size = static_cast<std::uint32_t>(len);
            b.segment = si;
            if (last == si) b.type = s.type;
            if (ref.how == match_kind::by_name)
                ref.length = parent_size - ref.offset; // spans the run
            add(plan, b, ref, 0);
            si = last + 1;
            continue;
        }
        auto ref = reference_of(s);
        for (std::uint64_t r = 0; r < s.length; r += bs) {
            planned_block b;
            b.offset = s.offset + r;
            b.size = static_cast<std::uint32_t>(std::min(bs, s.length - r));
            b.type = s.type;
            b.segment = si;
            add(plan, b, ref, r);
        }
        ++si;
    }
    return plan;
}

} // namespace tpde::format

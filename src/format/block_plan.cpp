#include "tpde/format/block_plan.hpp"

#include <algorithm>

namespace tpde::format {

const char* name_of(match_kind m) {
    switch (m) {
    case match_kind::by_name:
        return "name";
    case match_kind::by_key:
        return "key";
    case match_kind::by_offset:
        return "offset";
    case match_kind::none:
        return "none";
    }
    return "?";
}

block_cutter::block_cutter(const file_layout* parent, std::uint64_t parent_size, plan_options opts)
    : parent_(parent), parent_size_(parent_size), opts_(opts),
      block_max_(std::max(opts.block_size, opts.small_segment)) {
    if (parent)
        for (const auto& s : parent->segments) {
            parent_by_name_.emplace(s.name, &s);
            if (!s.tensor.empty()) parent_by_tensor_.emplace(s.tensor, &s);
        }
}

namespace {

bool by_identity(match_kind m) {
    return m == match_kind::by_name || m == match_kind::by_key;
}

} // namespace

block_cutter::reference_range block_cutter::reference_of(const segment& s) const {
    if (!parent_) return {};
    const segment* p = nullptr;
    match_kind how = match_kind::by_name;
    if (!s.tensor.empty())
        if (auto it = parent_by_tensor_.find(s.tensor); it != parent_by_tensor_.end())
            p = it->second;
    if (!p)
        if (auto it = parent_by_name_.find(s.name); it != parent_by_name_.end()) {
            p = it->second;
            if (!s.tensor.empty() || !p->tensor.empty()) {
                how = match_kind::by_key;
                // Both named, differently: the storage key (torch's numbering in dict order)
                // is the same tensor only if it is renamed in place: same length and type.
                if (!s.tensor.empty() && !p->tensor.empty() &&
                    (p->length != s.length || p->type != s.type))
                    p = nullptr;
            }
        }
    if (p) {
        reference_range r{how, p->offset, p->length};
        // The leading dimension grew: the rows the parent has, then the new rows alone.
        if (s.row_bytes && s.row_bytes == p->row_bytes && s.type == p->type &&
            s.length != open_ended && s.length > p->length && p->length % p->row_bytes == 0 &&
            s.length % s.row_bytes == 0)
            r.split = p->length;
        return r;
    }
    if (s.offset < parent_size_) return {match_kind::by_offset, s.offset, parent_size_ - s.offset};
    return {};
}

planned_block block_cutter::with_reference(planned_block b, const reference_range& ref,
                                           std::uint64_t rel) const {
    if (ref.how != match_kind::none && rel < ref.length) {
        b.match = ref.how;
        b.ref_offset = ref.offset + rel;
        b.ref_size = static_cast<std::uint32_t>(std::min<std::uint64_t>(b.size, ref.length - rel));
    }
    return b;
}

void block_cutter::add(segment s) {
    segments_.push_back(std::move(s));
}

void block_cutter::finish(const file_layout& final_layout) {
    const std::uint64_t at =
        current_ < segments_.size()
            ? segments_[current_].offset + within_
            : (segments_.empty() ? 0 : segments_.back().offset + segments_.back().length);
    segments_ = final_layout.segments;
    final_ = true;
    // The blocks handed out end where the final layout has the same segment (what was handed
    // out is a prefix of it): go on from there.
    current_ = segments_.size();
    within_ = 0;
    for (std::size_t i = 0; i < segments_.size(); ++i)
        if (at >= segments_[i].offset && at - segments_[i].offset < segments_[i].length) {
            current_ = i;
            within_ = at - segments_[i].offset;
            break;
        }
}

std::optional<std::uint64_t> block_cutter::length_of(std::size_t i, std::uint64_t known) const {
    const auto& s = segments_[i];
    if (s.length != open_ended) return s.length;
    // Open-ended (a stream only): large once small_segment of its bytes are known.
    if (known > s.offset && known - s.offset >= opts_.small_segment) return open_ended;
    return std::nullopt;
}

std::optional<planned_block> block_cutter::next(std::uint64_t known) {
    if (current_ >= segments_.size()) return std::nullopt;
    const segment& s = segments_[current_];
    const auto len = length_of(current_, known);
    if (!len) return std::nullopt;
    auto ref = reference_of(s);
    planned_block b;
    b.offset = s.offset + within_;
    b.segment = current_;
    if (*len < opts_.small_segment) {
        // A run of small segments becomes one block, coded against the parent's bytes from
        // the run's first segment on: a frame per 16-byte descriptor would cost more than it
        // holds. The run ends where the parent's layout differs (a grown pickle), so one
        // reference range fits it. Deciding where it ends may need the next segment.
        auto same_place = [&](const segment& n) {
            if (!by_identity(ref.how)) return true;
            auto r = reference_of(n);
            return by_identity(r.how) && r.offset - ref.offset == n.offset - s.offset;
        };
        std::size_t last = current_;
        std::uint64_t run = *len;
        for (;;) {
            const std::size_t k = last + 1;
            if (k == segments_.size()) {
                if (!final_) return std::nullopt;
                break;
            }
            const auto next_len = length_of(k, known);
            if (!next_len) return std::nullopt;
            if (*next_len >= opts_.small_segment || run + *next_len > block_max_ ||
                !same_place(segments_[k]))
                break;
            run += *next_len;
            last = k;
        }
        if (s.offset + run > known) return std::nullopt;
        b.size = static_cast<std::uint32_t>(run);
        if (last == current_) b.type = s.type;
        if (by_identity(ref.how)) ref.length = parent_size_ - ref.offset; // the run
        current_ = last + 1;
        within_ = 0;
        return with_reference(b, ref, 0);
    }
    std::uint64_t size = *len == open_ended ? block_max_ : std::min(block_max_, *len - within_);
    if (ref.split > within_ && ref.split - within_ < size) size = ref.split - within_;
    if (b.offset + size > known) return std::nullopt;
    b.size = static_cast<std::uint32_t>(size);
    b.type = s.type;
    auto out = with_reference(b, ref, within_);
    within_ += size;
    if (*len != open_ended && within_ >= *len) {
        ++current_;
        within_ = 0;
    }
    return out;
}

std::vector<planned_block> plan_blocks(const file_layout& next, const file_layout* parent,
                                       std::uint64_t parent_size, const plan_options& opts) {
    block_cutter cutter(parent, parent_size, opts);
    cutter.finish(next);
    const std::uint64_t size =
        next.segments.empty() ? 0 : next.segments.back().offset + next.segments.back().length;
    std::vector<planned_block> plan;
    while (auto b = cutter.next(size)) plan.push_back(*b);
    return plan;
}

} // namespace tpde::format

#include <gtest/gtest.h>

#include "tpde/format/block_plan.hpp"

using namespace tpde::format;
using tpde::codec::element_type;

namespace {
file_layout layout(std::vector<segment> segs) {
    file_layout l;
    l.kind = layout_kind::torch_zip;
    l.segments = std::move(segs);
    return l;
}
} // namespace

TEST(BlockPlan, SegmentsFindTheirNamesakeAfterAShift) {
    auto prev = layout({{"hdr", 0, 64, {}},
                        {"a", 64, 300000, element_type::f32},
                        {"b", 300064, 8192, element_type::bf16}});
    // The header grew by 64 bytes and a tensor was added before "b".
    auto next = layout({{"hdr", 0, 128, {}},
                        {"a", 128, 300000, element_type::f32},
                        {"new", 300128, 8192, {}},
                        {"b", 308320, 8192, element_type::bf16}});
    auto plan = plan_blocks(next, &prev, 308256, {.block_size = 128 << 10});
    ASSERT_EQ(plan.size(), 1u + 3u + 1u + 1u);
    EXPECT_EQ(plan[1].offset, 128u);
    EXPECT_EQ(plan[1].ref_offset, 64u);
    EXPECT_EQ(plan[1].match, match_kind::by_name);
    EXPECT_EQ(plan[1].type, element_type::f32);
    EXPECT_EQ(plan[2].ref_offset, 64u + (128u << 10)); // second block of "a"
    EXPECT_EQ(plan[3].size, 300000u - 2 * (128u << 10));
    EXPECT_EQ(plan[4].match, match_kind::by_offset); // "new": no namesake, same offset
    EXPECT_EQ(plan[4].ref_offset, 300128u);
    EXPECT_EQ(plan[5].ref_offset, 300064u);
    EXPECT_EQ(plan[5].match, match_kind::by_name);
    std::uint64_t at = 0;
    for (const auto& b : plan) {
        EXPECT_EQ(b.offset, at);
        at += b.size;
    }
    EXPECT_EQ(at, 308320u + 8192u);
}

TEST(BlockPlan, SmallSegmentsShareABlockOnlyWhereTheParentAgrees) {
    auto prev = layout({{"h0", 0, 64, {}},
                        {"pkl", 64, 500, {}},
                        {"h1", 564, 64, {}},
                        {"t", 628, 8192, element_type::f32}});
    auto same = plan_blocks(prev, &prev, 8820);
    ASSERT_EQ(same.size(), 2u); // h0+pkl+h1 as one block, then t
    EXPECT_EQ(same[0].size, 628u);
    auto grown = layout({{"h0", 0, 64, {}},
                         {"pkl", 64, 700, {}},
                         {"h1", 764, 64, {}},
                         {"t", 828, 8192, element_type::f32}});
    auto plan = plan_blocks(grown, &prev, 8820);
    ASSERT_EQ(plan.size(), 3u); // the run breaks where the grown pickle shifted h1
    EXPECT_EQ(plan[0].size, 764u);
    EXPECT_EQ(plan[1].offset, 764u);
    EXPECT_EQ(plan[1].ref_offset, 564u);
}

TEST(BlockPlan, WithoutParentNothingIsReferenced) {
    auto next = layout({{"a", 0, 10000, element_type::f32}});
    for (const auto& b : plan_blocks(next, nullptr, 0)) EXPECT_EQ(b.ref_size, 0u);
    auto other = layout({{"b", 0, 100, {}}});
    auto past = plan_blocks(next, &other, 100, {.block_size = 4096});
    ASSERT_EQ(past.size(), 3u);
    EXPECT_EQ(past[0].match, match_kind::by_offset);
    EXPECT_EQ(past[0].ref_size, 100u);
    EXPECT_EQ(past[1].match, match_kind::none); // beyond the parent's end
    auto generic = generic_layout(5);
    auto plan = plan_blocks(generic, &generic, 5);
    ASSERT_EQ(plan.size(), 1u);
    EXPECT_EQ(plan[0].match, match_kind::by_name);
}

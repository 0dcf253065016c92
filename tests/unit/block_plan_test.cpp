#include <gtest/gtest.h>
#include <random>

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

namespace {
segment named(std::string key, std::uint64_t off, std::uint64_t len, std::string tensor,
              std::optional<element_type> type = element_type::f32, std::uint64_t rows = 0) {
    return {std::move(key), off, len, type, std::move(tensor), rows};
}
} // namespace

TEST(BlockPlan, CheckpointNamesFirstThenStorageKeysThenOffsets) {
    auto prev = layout({named("data/0", 0, 8192, "m.a"), named("data/1", 8192, 8192, "m.b"),
                        named("data/2", 16384, 12288, "m.c")});
    // An entry inserted at the front renumbers every storage; "m.c" was renamed as well.
    auto next =
        layout({named("data/0", 0, 4096, "m.new"), named("data/1", 4096, 8192, "m.a"),
                named("data/2", 12288, 8192, "m.b"), named("data/3", 20480, 12288, "m.c2")});
    auto plan = plan_blocks(next, &prev, 28672, {.block_size = 128 << 10});
    ASSERT_EQ(plan.size(), 4u);
    EXPECT_EQ(plan[0].match, match_kind::by_offset); // data/0 is another tensor, of another size
    EXPECT_EQ(plan[1].match, match_kind::by_name);
    EXPECT_EQ(plan[1].ref_offset, 0u);
    EXPECT_EQ(plan[2].match, match_kind::by_name);
    EXPECT_EQ(plan[2].ref_offset, 8192u);
    EXPECT_EQ(plan[3].match, match_kind::by_offset); // no data/3 in the parent

    // Every name changed (a module. prefix), every position stayed: the storage key matches
    // where length and type agree.
    auto renamed =
        layout({named("data/0", 0, 8192, "module.a"), named("data/1", 8192, 8192, "module.b"),
                named("data/2", 16384, 12288, "module.c", element_type::bf16)});
    plan = plan_blocks(renamed, &prev, 28672);
    ASSERT_EQ(plan.size(), 3u);
    EXPECT_EQ(plan[0].match, match_kind::by_key);
    EXPECT_EQ(plan[1].match, match_kind::by_key);
    EXPECT_EQ(plan[1].ref_offset, 8192u);
    EXPECT_EQ(plan[2].match, match_kind::by_offset); // another type: not the same tensor

    // A parent without checkpoint names (an object written before they existed): storage
    // keys match as they always did.
    auto old = layout({named("data/0", 0, 8192, ""), named("data/1", 8192, 8192, ""),
                       named("data/2", 16384, 12288, "")});
    plan = plan_blocks(next, &old, 28672);
    EXPECT_EQ(plan[0].match, match_kind::by_key);
    EXPECT_EQ(plan[0].ref_offset, 0u);
    EXPECT_EQ(plan[1].match, match_kind::by_key);
    EXPECT_EQ(plan[1].ref_offset, 8192u);
    // Segments with no checkpoint name on either side match by their name, as before.
    auto plain = layout({named("data.pkl", 0, 100, "", std::nullopt)});
    plan = plan_blocks(plain, &plain, 100);
    EXPECT_EQ(plan[0].match, match_kind::by_name);
}

TEST(BlockPlan, GrownTensorCodesItsOldRowsAgainstTheParentAndNewRowsAlone) {
    const std::uint64_t row = 1024;
    auto prev = layout({named("data/0", 0, 300 * row, "tok", element_type::f32, row)});
    auto grown = layout({named("data/0", 0, 308 * row, "tok", element_type::f32, row)});
    auto plan = plan_blocks(grown, &prev, 300 * row, {.block_size = 128 << 10});
    ASSERT_EQ(plan.size(), 4u);
    EXPECT_EQ(plan[2].offset, 256 * row);
    EXPECT_EQ(plan[2].size, 44 * row); // ends where the parent's rows end
    EXPECT_EQ(plan[2].ref_size, 44 * row);
    EXPECT_EQ(plan[2].match, match_kind::by_name);
    EXPECT_EQ(plan[3].offset, 300 * row);
    EXPECT_EQ(plan[3].size, 8 * row);
    EXPECT_EQ(plan[3].ref_size, 0u);
    EXPECT_EQ(plan[3].match, match_kind::none);
    // Shrunk: every row has its parent row.
    auto shrunk = layout({named("data/0", 0, 290 * row, "tok", element_type::f32, row)});
    plan = plan_blocks(shrunk, &prev, 300 * row, {.block_size = 128 << 10});
    ASSERT_EQ(plan.size(), 3u);
    EXPECT_EQ(plan[2].ref_size, plan[2].size);
    // Rows of another size (a trailing dimension changed), or no shape: blocks as before.
    for (std::uint64_t rows : {std::uint64_t{0}, 2 * row}) {
        auto other = layout({named("data/0", 0, 308 * row, "tok", element_type::f32, rows)});
        plan = plan_blocks(other, &prev, 300 * row, {.block_size = 128 << 10});
        ASSERT_EQ(plan.size(), 3u);
        EXPECT_EQ(plan[2].size, 52 * row);
        EXPECT_EQ(plan[2].ref_size, 44 * row);
    }
}

// A writer learns segments and bytes as they arrive; whatever the order and chunking, it
// must cut the same blocks as plan_blocks of the final layout (one cutter for both).
TEST(BlockPlan, StreamedCuttingEqualsWholeFilePlan) {
    std::mt19937 rng(11);
    int grown = 0;
    for (int round = 0; round < 300; ++round) {
        file_layout final_layout = layout({});
        std::uint64_t at = 0;
        const int n = 1 + static_cast<int>(rng() % 12);
        for (int i = 0; i < n; ++i) {
            std::uint64_t len = rng() % 2 ? 1 + rng() % 5000 : 1 + rng() % 400000;
            std::optional<element_type> type;
            if (rng() % 2) type = element_type::f32;
            // Checkpoint names in another order than the keys, and some with a row size (a
            // tensor of the parent's that grew, on the last one not streamed open-ended).
            segment s{"s" + std::to_string(i), at, len, type};
            if (rng() % 2) s.tensor = "t" + std::to_string((i * 7) % n);
            if (s.tensor == "t2" && i + 1 < n && len > 1000 && rng() % 2) {
                s.row_bytes = 100;
                s.length = len = len / 100 * 100;
                ++grown;
            }
            final_layout.segments.push_back(s);
            at += len;
        }
        const std::uint64_t size = at;
        auto prev = layout({{"s0", 0, 100, {}},
                            {"s2", 100, 900000, element_type::f32, "t1"},
                            {"s3", 900100, 1000, element_type::f32, "t2", 100}});
        const file_layout* parent = round % 2 ? &prev : nullptr;
        const plan_options opts{.block_size = 1u << (12 + rng() % 6)};
        const auto want = plan_blocks(final_layout, parent, 901100, opts);

        // Streamed: the last segment handed out open-ended half the time; bytes in random
        // chunks, and segments handed out at random times, well ahead of their bytes or well
        // after them (a pickle's end is found late).
        std::vector<segment> handed = final_layout.segments;
        if (rng() % 2) handed.back().length = open_ended;
        block_cutter cutter(parent, 901100, opts);
        std::vector<planned_block> got;
        std::size_t added = 0;
        for (std::uint64_t known = 0; known < size;) {
            known = std::min(size, known + 1 + rng() % 20000);
            for (auto more = rng() % 3; more > 0 && added < handed.size(); --more)
                cutter.add(handed[added++]);
            while (auto b = cutter.next(known)) got.push_back(*b);
        }
        while (added < handed.size()) cutter.add(handed[added++]);
        cutter.finish(final_layout);
        while (auto b = cutter.next(size)) got.push_back(*b);

        ASSERT_EQ(got.size(), want.size()) << "round " << round;
        for (std::size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ(got[i].offset, want[i].offset) << "round " << round << " block " << i;
            EXPECT_EQ(got[i].size, want[i].size) << "round " << round << " block " << i;
            EXPECT_EQ(got[i].type, want[i].type) << "round " << round << " block " << i;
            EXPECT_EQ(got[i].ref_offset, want[i].ref_offset) << "round " << round;
            EXPECT_EQ(got[i].ref_size, want[i].ref_size) << "round " << round;
            EXPECT_EQ(got[i].match, want[i].match) << "round " << round;
        }
    }
    EXPECT_GT(grown, 10); // resized tensors were among the layouts
}

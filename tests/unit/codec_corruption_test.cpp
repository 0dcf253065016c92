// Frames are hostile input: every damaged or truncated frame must fail with decode_error,
// never crash, hang, or return wrong bytes.
#include <gtest/gtest.h>

#include "test_data.hpp"
#include "tpde/codec/codec.hpp"

using namespace tpde;
using codec::element_type;
using codec::method;

namespace {

struct sample {
    std::vector<std::byte> block, ref, frame;
};

std::vector<sample> small_frames() {
    auto w = test::weights_f32(300, 5);
    auto prev = test::to_bytes(w.data(), w.size() * 4 - 1);
    auto dense_next = test::step_f32(w, 0.9, 6);
    auto sparse_next = test::step_f32(w, 0.02, 7);
    std::vector<sample> out;
    auto add = [&](std::vector<std::byte> block, std::vector<std::byte> ref,
                   codec::encode_options o, method want) {
        auto frame = codec::encode(block, ref, o);
        EXPECT_EQ(codec::inspect(frame).m, want);
        out.push_back({std::move(block), std::move(ref), std::move(frame)});
    };
    auto dense = test::to_bytes(dense_next.data(), dense_next.size() * 4 - 1);
    auto sparse = test::to_bytes(sparse_next.data(), sparse_next.size() * 4 - 1);
    add(dense, prev,
        {.type = element_type::f32,
         .allow_standalone = false,
         .allow_sparse = false,
         .allow_patch = false},
        method::dense);
    add(sparse, prev,
        {.type = element_type::f32,
         .allow_standalone = false,
         .allow_dense = false,
         .allow_patch = false},
        method::sparse);
    add(sparse, prev,
        {.type = element_type::bytes,
         .allow_standalone = false,
         .allow_dense = false,
         .allow_sparse = false},
        method::patch);
    std::vector<std::byte> zeros(600, std::byte{0});
    add(zeros, {}, {.type = element_type::bf16}, method::standalone);
    add(test::random_bytes(50, 3), {}, {}, method::raw);
    return out;
}

void expect_clean_failure_or_exact(const sample& s, const std::vector<std::byte>& frame,
                                   bool checked) {
    codec::decode_options o;
    o.verify_frame_check = checked;
    try {
        auto back = codec::decode(frame, s.ref, o);
        // With the frame check on, no damage may pass at all; without it, damage that
        // happens not to matter (padding bits) may decode, but only to the right bytes.
        EXPECT_FALSE(checked) << "damaged frame decoded";
        EXPECT_EQ(back, s.block) << "damaged frame decoded to wrong bytes";
    } catch (const codec::decode_error&) {
    }
}

} // namespace

TEST(CodecCorruption, EveryByteFlipFails) {
    for (const auto& s : small_frames()) {
        ASSERT_EQ(codec::decode(s.frame, s.ref), s.block);
        for (std::size_t i = 0; i < s.frame.size(); ++i) {
            for (std::uint8_t mask : {0x01, 0x80, 0xff}) {
                auto f = s.frame;
                f[i] ^= std::byte{mask};
                EXPECT_THROW(codec::decode(f, s.ref), codec::decode_error) << "byte " << i;
                // Behind the frame check the decoders themselves must stay safe.
                expect_clean_failure_or_exact(s, f, false);
            }
        }
    }
}

TEST(CodecCorruption, EveryTruncationFails) {
    for (const auto& s : small_frames()) {
        for (std::size_t len = 0; len < s.frame.size(); ++len) {
            std::vector<std::byte> f(s.frame.begin(), s.frame.begin() + len);
            EXPECT_THROW(codec::decode(f, s.ref), codec::decode_error) << "length " << len;
            expect_clean_failure_or_exact(s, f, false);
        }
        auto longer = s.frame;
        longer.push_back(std::byte{0});
        EXPECT_THROW(codec::decode(longer, s.ref), codec::decode_error);
    }
}

TEST(CodecCorruption, ForgedHeaderSizesDoNotAllocate) {
    auto s = small_frames()[0];
    // Claim 4 GiB - 1 decoded bytes: refused by the limit before any allocation.
    auto f = s.frame;
    f[8] = f[9] = f[10] = f[11] = std::byte{0xff};
    codec::decode_options o;
    o.verify_frame_check = false;
    EXPECT_THROW(codec::decode(f, s.ref, o), codec::decode_error);
}

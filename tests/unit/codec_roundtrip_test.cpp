#include <gtest/gtest.h>

#include "../../src/codec/analyze_simd.hpp"
#include "../../src/codec/byte_planes.hpp"
#include "../../src/codec/rans_simd.hpp"
#include "../../src/codec/residual.hpp"
#include "test_data.hpp"
#include "tpde/codec/codec.hpp"

using namespace tpde;
using codec::element_type;
using codec::method;

namespace {

struct roundtrip_result {
    codec::encode_info info;
    std::size_t frame_size;
};

roundtrip_result roundtrip(const std::vector<std::byte>& block, const std::vector<std::byte>& ref,
                           codec::encode_options opts = {}) {
    codec::encode_info info;
    auto frame = codec::encode(block, ref, opts, &info);
    EXPECT_LE(frame.size(), block.size() + codec::frame_header_size);
    EXPECT_EQ(info.frame_bytes, frame.size());
    auto back = codec::decode(frame, ref);
    EXPECT_EQ(back, block) << "method " << codec::name_of(info.chosen) << " size " << block.size();
    return {info, frame.size()};
}

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
    return test::to_bytes(v.data(), v.size() * 4);
}

std::vector<std::byte> bf16_bytes(const std::vector<float>& v) {
    std::vector<std::uint16_t> h(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) h[i] = test::to_bf16(v[i]);
    return test::to_bytes(h.data(), h.size() * 2);
}

std::vector<std::byte> f16_bytes(std::size_t n, std::uint32_t seed, bool perturb) {
    std::mt19937 rng(seed);
    std::vector<std::uint16_t> h(n);
    const std::uint16_t specials[] = {0x7e01, 0xfc00, 0x8000, 0x0001, 0x7c00, 0x03ff};
    for (std::size_t i = 0; i < n; ++i) h[i] = static_cast<std::uint16_t>(0x2000 + rng() % 0x1800);
    for (std::size_t i = 0; i < n && i < 6 * 31; i += 31) h[i] = specials[i / 31];
    if (perturb)
        for (std::size_t i = 0; i < n; i += 3)
            h[i] = static_cast<std::uint16_t>(h[i] + (rng() % 5) - 2);
    return test::to_bytes(h.data(), h.size() * 2);
}

const std::size_t sizes[] = {0, 1, 3, 4095, (4u << 20) + 3};

} // namespace

TEST(CodecRoundtrip, Fp32AllMethodsAllSizes) {
    for (std::size_t size : sizes) {
        auto prev = f32_bytes(test::weights_f32(size / 4 + 1, 1));
        auto next = f32_bytes(test::step_f32(test::weights_f32(size / 4 + 1, 1), 0.9, 2));
        prev.resize(size);
        next.resize(size);
        for (int forced = 0; forced < 5; ++forced) {
            codec::encode_options o;
            o.type = element_type::f32;
            o.allow_dense = forced == 0 || forced == 1;
            o.allow_sparse = forced == 0 || forced == 2;
            o.allow_standalone = forced == 0 || forced == 3;
            o.allow_patch = forced == 0 || forced == 4;
            roundtrip(next, prev, o);
        }
        roundtrip(next, {}, {}); // no reference
    }
}

TEST(CodecRoundtrip, DeltaBeatsStandaloneOnSimilarBlocks) {
    auto w = test::weights_f32(1 << 18, 7);
    auto prev = f32_bytes(w);
    auto next = f32_bytes(test::step_f32(w, 1.0, 8));
    auto with_ref = roundtrip(next, prev);
    auto without = roundtrip(next, {});
    EXPECT_EQ(with_ref.info.chosen, method::dense);
    EXPECT_EQ(without.info.chosen, method::standalone);
    EXPECT_LT(with_ref.frame_size * 1.3, without.frame_size);
}

// A reference unrelated to the block: the delta is estimated, found to lose, and not coded;
// the frame is exactly what the standalone method alone gives, and smaller than the delta.
TEST(CodecRoundtrip, StandaloneWinsOverAnUnrelatedReference) {
    auto prev = f32_bytes(test::weights_f32(1 << 15, 41));
    std::vector<float> magnitudes(1 << 15);
    for (std::size_t i = 0; i < magnitudes.size(); ++i)
        magnitudes[i] = static_cast<float>(i % 7) * 1e-3f; // few exponents, positive
    auto next = f32_bytes(magnitudes);
    auto chosen = roundtrip(next, prev);
    auto standalone_only = roundtrip(next, prev, {.allow_dense = false, .allow_sparse = false});
    auto delta_only = roundtrip(next, prev, {.allow_standalone = false});
    EXPECT_EQ(chosen.info.chosen, method::standalone);
    EXPECT_EQ(chosen.frame_size, standalone_only.frame_size);
    EXPECT_LT(chosen.frame_size, delta_only.frame_size);
}

// The estimate a delta_proceed callback gets is close to the payload then written: within
// 3%, or 64 bytes (a table's worth) for a payload of a few hundred bytes.
TEST(CodecRoundtrip, DeltaEstimateIsCloseToThePayload) {
    auto w = test::weights_f32(1 << 15, 51);
    auto prev = f32_bytes(w);
    for (double p : {0.01, 0.5, 1.0}) {
        for (bool bf16 : {false, true}) {
            auto next_w = test::step_f32(w, p, 52);
            auto next = bf16 ? bf16_bytes(next_w) : f32_bytes(next_w);
            auto ref = bf16 ? bf16_bytes(w) : prev;
            std::size_t estimate = 0;
            std::vector<std::byte> payload;
            auto r =
                codec::detail::encode_delta(bf16 ? element_type::bf16 : element_type::f32, next,
                                            ref, true, true, payload, 16, [&](std::size_t e) {
                                                estimate = e;
                                                return true;
                                            });
            ASSERT_TRUE(r.written);
            EXPECT_NEAR(double(estimate), double(payload.size()),
                        0.03 * double(payload.size()) + 64)
                << "p " << p << (bf16 ? " bf16 " : " f32 ") << codec::name_of(r.chosen);
            // Declining leaves the payload untouched.
            std::vector<std::byte> declined;
            auto d = codec::detail::encode_delta(bf16 ? element_type::bf16 : element_type::f32,
                                                 next, ref, true, true, declined, 16,
                                                 [](std::size_t) { return false; });
            EXPECT_FALSE(d.written);
            EXPECT_TRUE(declined.empty());
        }
    }
}

// Scattered changes: fractional-bit dense coding of "unchanged" is near the entropy, so the
// encoder may pick either form, but must pick (about) the smaller one.
TEST(CodecRoundtrip, ChoosesTheSmallerOfDenseAndSparse) {
    auto w = test::weights_f32(1 << 18, 9);
    auto prev = f32_bytes(w);
    for (double p : {0.0005, 0.01, 0.3}) {
        auto next = f32_bytes(test::step_f32(w, p, 10));
        auto dense = roundtrip(
            next, prev,
            {.type = element_type::f32, .allow_standalone = false, .allow_sparse = false});
        auto sparse =
            roundtrip(next, prev,
                      {.type = element_type::f32, .allow_standalone = false, .allow_dense = false});
        auto chosen = roundtrip(next, prev, {.type = element_type::f32});
        EXPECT_LE(chosen.frame_size, std::min(dense.frame_size, sparse.frame_size) * 1.03) << p;
        EXPECT_NEAR(double(chosen.info.changed) / (1 << 18), p, p * 0.2 + 0.001);
    }
}

// Clustered changes (rows of an embedding that saw no gradient): the Elias-delta gaps win.
TEST(CodecRoundtrip, SparseChosenForClusteredChanges) {
    auto w = test::weights_f32(1 << 18, 9);
    auto prev = f32_bytes(w);
    auto changed = w;
    for (std::size_t i = 5000; i < 5000 + 2000; ++i) changed[i] *= 1.001f;
    auto r = roundtrip(f32_bytes(changed), prev, {.type = element_type::f32});
    EXPECT_EQ(r.info.chosen, method::sparse);
    EXPECT_EQ(r.info.changed, 2000u);
    EXPECT_LT(r.frame_size, prev.size() / 100);
}

TEST(CodecRoundtrip, Bf16AndF16) {
    for (std::size_t size : sizes) {
        auto w = test::weights_f32(size / 2 + 1, 3);
        auto prev = bf16_bytes(w);
        auto next = bf16_bytes(test::step_f32(w, 0.5, 4));
        prev.resize(size);
        next.resize(size);
        roundtrip(next, prev, {.type = element_type::bf16});
        roundtrip(next, prev, {}); // probed
        auto hp = f16_bytes(size / 2 + 1, 5, false);
        auto hn = f16_bytes(size / 2 + 1, 5, true);
        hp.resize(size);
        hn.resize(size);
        roundtrip(hn, hp, {.type = element_type::f16});
    }
}

TEST(CodecRoundtrip, BytesAndF64) {
    for (std::size_t size : sizes) {
        auto prev = test::random_bytes(size, 11);
        auto next = prev;
        for (std::size_t i = 0; i < next.size(); i += 7) next[i] ^= std::byte{0x01};
        roundtrip(next, prev, {.type = element_type::bytes});
        roundtrip(next, prev, {.type = element_type::f64});
        roundtrip(test::random_bytes(size, 12), prev, {}); // unrelated reference
    }
}

TEST(CodecRoundtrip, AllEqualAndAllDifferent) {
    std::vector<std::byte> zeros(1 << 16, std::byte{0});
    auto r = roundtrip(zeros, zeros, {.type = element_type::f32});
    EXPECT_LT(r.frame_size, 200u);
    auto w = test::weights_f32(1 << 14, 13);
    auto same = f32_bytes(w);
    r = roundtrip(same, same);
    EXPECT_EQ(r.info.changed, 0u);
    EXPECT_LT(r.frame_size, 200u);
    auto inv = same;
    for (auto& b : inv) b = ~b; // every element differs
    r = roundtrip(inv, same, {.type = element_type::f32});
    EXPECT_EQ(r.info.changed, w.size());
}

TEST(CodecRoundtrip, EveryNanPayloadAndSpecialKept) {
    std::vector<std::uint32_t> bits;
    for (std::uint32_t m : {1u, 2u, 0x3fffffu, 0x400000u, 0x7fffffu})
        for (std::uint32_t s : {0u, 0x80000000u}) bits.push_back(s | 0x7f800000u | m);
    for (std::uint32_t v :
         {0u, 0x80000000u, 1u, 0x80000001u, 0x7fffffu, 0x7f800000u, 0xff800000u, 0x7f7fffffu})
        bits.push_back(v);
    auto next = test::to_bytes(bits.data(), bits.size() * 4);
    std::vector<std::uint32_t> rbits(bits.rbegin(), bits.rend());
    auto prev = test::to_bytes(rbits.data(), rbits.size() * 4);
    for (auto t : {element_type::f32, element_type::bf16, element_type::f16, element_type::f64,
                   element_type::bytes}) {
        codec::encode_options o;
        o.type = t;
        o.allow_standalone = false;
        roundtrip(next, prev, o);
    }
}

TEST(CodecRoundtrip, ReferenceShorterOrLonger) {
    auto w = test::weights_f32(5000, 21);
    auto next = f32_bytes(test::step_f32(w, 0.7, 22));
    auto full = f32_bytes(w);
    auto shorter = std::vector<std::byte>(full.begin(), full.begin() + 7001); // not element-aligned
    auto longer = full;
    longer.resize(full.size() + 4096, std::byte{0x5a});
    codec::encode_options o;
    o.allow_standalone = false;
    auto r = roundtrip(next, shorter, o);
    EXPECT_NE(r.info.chosen, method::standalone);
    roundtrip(next, longer, o);
}

TEST(CodecRoundtrip, WrongReferenceIsReportedNotDecoded) {
    auto w = test::weights_f32(4096, 31);
    auto prev = f32_bytes(w);
    auto next = f32_bytes(test::step_f32(w, 0.9, 32));
    auto frame = codec::encode(next, prev, {.type = element_type::f32});
    ASSERT_NE(codec::inspect(frame).m, method::raw);
    auto wrong = prev;
    wrong[100] ^= std::byte{1};
    EXPECT_THROW(codec::decode(frame, wrong), codec::reference_mismatch);
    EXPECT_THROW(codec::decode(frame, {}), codec::reference_mismatch);
    auto truncated = std::vector<std::byte>(prev.begin(), prev.end() - 4);
    EXPECT_THROW(codec::decode(frame, truncated), codec::reference_mismatch);
}

TEST(CodecRoundtrip, RawFallbackNeverExceedsHeader) {
    auto noise = test::random_bytes(100003, 41);
    auto other = test::random_bytes(100003, 42);
    auto r = roundtrip(noise, other);
    EXPECT_EQ(r.info.chosen, method::raw);
    EXPECT_EQ(r.frame_size, noise.size() + codec::frame_header_size);
}

TEST(CodecRoundtrip, ProbeFindsTheElementType) {
    auto w = test::weights_f32(1 << 16, 51);
    auto prev = f32_bytes(w);
    auto next = f32_bytes(test::step_f32(w, 1.0, 52));
    codec::encode_info info;
    codec::encode(next, prev, {}, &info);
    EXPECT_EQ(info.type, element_type::f32);
    auto bprev = bf16_bytes(w);
    auto bnext = bf16_bytes(test::step_f32(w, 1.0, 53));
    codec::encode(bnext, bprev, {}, &info);
    EXPECT_EQ(info.type, element_type::bf16);
}

TEST(CodecRoundtrip, OversizedClaimRefused) {
    std::vector<std::byte> zeros(1 << 20, std::byte{0});
    auto frame = codec::encode(zeros, zeros, {.type = element_type::f32});
    codec::decode_options small;
    small.max_raw_size = 1 << 19;
    EXPECT_THROW(codec::decode(frame, zeros, small), codec::decode_error);
    EXPECT_EQ(codec::decode(frame, zeros), zeros);
}

// Decoding into a recycled buffer: it grows to fit, is never shrunk, and the returned bytes
// are exactly the block's.
TEST(CodecRoundtrip, DecodesIntoTheStartOfARecycledBuffer) {
    auto w = test::weights_f32(3001, 11);
    auto big = test::to_bytes(w.data(), 4 * w.size()), small = test::to_bytes(w.data(), 21);
    std::vector<std::byte> buffer;
    auto out = codec::decode(codec::encode(big, {}), {}, buffer);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), big.begin(), big.end()));
    const auto* storage = buffer.data();
    out = codec::decode(codec::encode(small, big), big, buffer);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), small.begin(), small.end()));
    EXPECT_EQ(out.data(), storage);
    EXPECT_EQ(buffer.size(), big.size());
}

// An insertion shifts every later byte: residuals cannot follow, the patch method can.
TEST(CodecRoundtrip, PatchFollowsInsertedBytes) {
    std::string a(3000, ' '), b;
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<char>('a' + (i * 7919) % 26);
    b = a.substr(0, 1000) + "INSERTED TEXT" + a.substr(1000);
    auto prev = test::to_bytes(a.data(), a.size());
    auto next = test::to_bytes(b.data(), b.size());
    auto r = roundtrip(next, prev, {.type = element_type::bytes});
    EXPECT_EQ(r.info.chosen, method::patch);
    EXPECT_LT(r.frame_size, 120u);
}

// Frames written before the 16-lane layout (2 interleaved rANS states, no lane flag) still
// decode, and both layouts round-trip every element type in both delta forms, including
// block sizes that leave a partial round of lanes.
TEST(CodecRoundtrip, BothRansLaneLayouts) {
    for (std::size_t n : {1000u, 4099u, 65536u + 5u}) {
        auto w = test::weights_f32(n, 21);
        auto prev32 = f32_bytes(w), next32 = f32_bytes(test::step_f32(w, 0.9, 22));
        auto prev16 = bf16_bytes(w), next16 = bf16_bytes(test::step_f32(w, 0.3, 23));
        // The last element changed: a vector decoder must not read past the reference there.
        next32[next32.size() - 4] ^= std::byte{1};
        next16[next16.size() - 2] ^= std::byte{1};
        struct typed {
            element_type t;
            const std::vector<std::byte>& next;
            const std::vector<std::byte>& prev;
        };
        for (const auto& [t, next, prev] :
             {typed{element_type::f32, next32, prev32}, typed{element_type::bf16, next16, prev16},
              typed{element_type::bytes, next32, prev32}}) {
            for (bool sparse : {false, true}) {
                for (unsigned lanes : {2u, 16u}) {
                    codec::encode_options o;
                    o.type = t;
                    o.allow_standalone = o.allow_patch = false;
                    o.allow_dense = !sparse;
                    o.allow_sparse = sparse;
                    o.rans_lanes = lanes;
                    auto r = roundtrip(next, prev, o);
                    EXPECT_EQ(r.info.chosen, sparse ? method::sparse : method::dense);
                    // Header byte 7, bit 1: 16 lanes, used for sections of 1024+ elements.
                    auto frame = codec::encode(next, prev, o);
                    const bool wide = (std::to_integer<unsigned>(frame[7]) & 2) != 0;
                    const auto coded = sparse ? r.info.changed : next.size() / codec::width_of(t);
                    EXPECT_EQ(wide, lanes == 16 && coded >= 1024)
                        << next.size() << " " << lanes << " " << sparse;
                }
            }
        }
    }
    codec::encode_options bad;
    bad.rans_lanes = 4;
    auto w = f32_bytes(test::weights_f32(4096, 1));
    EXPECT_THROW(codec::encode(w, w, bad), std::invalid_argument);
}

// The AVX-512 encoder pass and decoder are the scalar ones, faster: the same frames, and
// each decodes what the other encoded. Sizes leave partial rounds of 16; f32 and bf16, dense
// and sparse. (Where the CPU has no AVX-512 both runs take the scalar path.)
// Byte planes: split as defined (plane b holds byte b of every element) and merged back, on
// the vector path and off it, for every width and for lengths around the vector steps.
TEST(CodecRoundtrip, BytePlanesSplitAndMergeBack) {
    struct restore_vector_paths {
        ~restore_vector_paths() { codec::detail::set_avx512_allowed(true); }
    } restore;
    for (bool vector : {true, false}) {
        codec::detail::set_avx512_allowed(vector);
        for (std::size_t w : {1u, 2u, 4u, 8u}) {
            for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 33u, 100u, 1000u}) {
                auto elements = test::random_bytes(n * w, static_cast<std::uint32_t>(n + w));
                std::vector<std::byte> planes(n * w), back(n * w);
                codec::detail::split_byte_planes(elements.data(), n, w, planes.data());
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t b = 0; b < w; ++b)
                        ASSERT_EQ(planes[b * n + i], elements[i * w + b])
                            << "width " << w << " n " << n << " element " << i << " byte " << b;
                codec::detail::merge_byte_planes(planes.data(), n, w, back.data());
                EXPECT_EQ(back, elements) << "width " << w << " n " << n;
            }
        }
    }
}

// The vector scan for the top exponent against a plain loop, over every tail length and
// with infinities and NaNs (which do not count) above the largest finite exponent.
TEST(CodecRoundtrip, TopExponentScanMatchesAPlainLoop) {
    if (!codec::detail::have_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
    auto w = test::weights_f32(1000, 61);   // holds infinities and NaNs
    w[517] = 3.5e30f;                       // the largest finite exponent, off a sampling grid
    auto half = f16_bytes(1000, 62, false); // holds infinities and NaNs too
    const std::uint16_t largest_half = 0x7bff;
    std::memcpy(half.data() + 2 * 517, &largest_half, 2);
    struct kind {
        const char* name;
        std::vector<std::byte> bytes;
        unsigned width, exp_bits;
    };
    for (const auto& [name, bytes, width, exp_bits] :
         {kind{"f32", f32_bytes(w), 4, 8}, kind{"bf16", bf16_bytes(w), 2, 8},
          kind{"f16", half, 2, 5}}) {
        const unsigned all_ones = (1u << exp_bits) - 1;
        for (std::size_t n : {0u, 1u, 15u, 16u, 31u, 33u, 517u, 518u, 1000u}) {
            unsigned expected = 0;
            for (std::size_t i = 0; i < n; ++i) {
                std::uint16_t hi;
                std::memcpy(&hi, bytes.data() + i * width + width - 2, 2);
                unsigned e = (hi >> (15 - exp_bits)) & all_ones;
                if (e != all_ones) expected = std::max(expected, e);
            }
            EXPECT_EQ(codec::detail::top_exponent_avx512(bytes.data(), n, width, exp_bits),
                      expected)
                << name << " " << n;
        }
    }
}

TEST(CodecRoundtrip, VectorAndScalarPathsAgree) {
    struct restore_vector_paths {
        ~restore_vector_paths() {
            codec::detail::set_avx512_allowed(true);
            codec::detail::set_vbmi_allowed(true);
        }
    } restore;
    for (std::size_t n : {1024u + 7u, 32768u + 15u}) {
        auto w = test::weights_f32(n, 31);
        auto prev32 = f32_bytes(w), next32 = f32_bytes(test::step_f32(w, 0.9, 32));
        auto prev16 = bf16_bytes(w), next16 = bf16_bytes(test::step_f32(w, 0.4, 33));
        auto prev_half = f16_bytes(n, 34, false), next_half = f16_bytes(n, 34, true);
        next16[next16.size() - 2] ^= std::byte{1}; // the last element changed
        next32[next32.size() - 4] ^= std::byte{1};
        next_half[next_half.size() - 2] ^= std::byte{1};
        struct typed {
            element_type t;
            const std::vector<std::byte>& next;
            const std::vector<std::byte>& prev;
        };
        for (const auto& [t, next, prev] :
             {typed{element_type::f32, next32, prev32}, typed{element_type::bf16, next16, prev16},
              typed{element_type::f16, next_half, prev_half}}) {
            for (bool sparse : {false, true}) {
                codec::encode_options o;
                o.type = t;
                o.allow_standalone = o.allow_patch = false;
                o.allow_dense = !sparse;
                o.allow_sparse = sparse;
                codec::detail::set_avx512_allowed(true);
                auto vector_frame = codec::encode(next, prev, o);
                codec::detail::set_avx512_allowed(false);
                auto scalar_frame = codec::encode(next, prev, o);
                EXPECT_EQ(vector_frame, scalar_frame) << n << " " << sparse;
                EXPECT_EQ(codec::decode(vector_frame, prev), next);
                codec::detail::set_avx512_allowed(true);
                EXPECT_EQ(codec::decode(scalar_frame, prev), next);
                // The decoder's two vector variants: raw bits by gather, and by byte permute.
                codec::detail::set_vbmi_allowed(false);
                EXPECT_EQ(codec::decode(vector_frame, prev), next);
                codec::detail::set_vbmi_allowed(true);
            }
        }
    }
}

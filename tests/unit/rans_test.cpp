#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "../../src/codec/bit_io.hpp"
#include "../../src/codec/rans.hpp"
#include "../../src/codec/rans_simd.hpp"

using namespace tpde::codec::detail;

TEST(Rans, NormalizeKeepsEverySeenSymbolAndSumsToScale) {
    std::vector<std::uint32_t> counts(64, 0);
    counts[0] = 1000000;
    for (int s = 1; s < 64; ++s) counts[s] = 1; // many rare symbols
    freq_table f;
    ASSERT_TRUE(normalize(counts, f));
    std::uint32_t sum = 0;
    for (int s = 0; s < 64; ++s) {
        EXPECT_GE(f[s], 1u);
        sum += f[s];
    }
    EXPECT_EQ(sum, prob_scale);
    std::vector<std::uint32_t> none(64, 0);
    EXPECT_FALSE(normalize(none, f));
}

TEST(Rans, RoundTripsSkewedAndUniformStreams) {
    // One word buffer for every stream, larger than needed and full of garbage: the encoder
    // reuses it without clearing.
    std::vector<std::uint16_t> words(300000, 0xdead);
    for (double skew : {0.5, 0.9, 0.999}) {
        std::mt19937 rng(1);
        std::geometric_distribution<int> g(1 - skew);
        std::vector<std::uint8_t> syms(100001);
        std::vector<std::uint32_t> counts(max_symbols, 0);
        for (auto& s : syms) {
            s = static_cast<std::uint8_t>(std::min(g(rng), 127));
            ++counts[s];
        }
        freq_table f;
        normalize(counts, f);
        enc_table et;
        et.init(f);
        dec_table dt;
        dt.init(f);
        rans_encoder enc(words, syms.size());
        std::uint32_t x[2] = {rans_low, rans_low};
        for (std::size_t i = syms.size(); i-- > 0;) enc.put(x[i & 1], et.sym[syms[i]]);
        enc.flush(x[1]);
        enc.flush(x[0]);
        std::vector<std::byte> out;
        byte_sink sink(out);
        enc.finish(sink);
        // Close to the entropy: within 1% + a few bytes.
        EXPECT_LT(out.size() * 8.0, entropy_bits(counts) * 1.01 + 64) << "skew " << skew;
        std::vector<std::byte> scratch;
        rans_decoder<2> dec(padded(out, scratch));
        for (std::size_t i = 0; i < syms.size(); ++i) {
            auto s = (i & 1) ? dec.get<1>(dt) : dec.get<0>(dt);
            ASSERT_EQ(s, syms[i]) << i;
            if (i % 64 == 63) dec.check_bounds();
        }
        EXPECT_TRUE(dec.finished_cleanly());
    }
}

// The vector table build gives the scalar one's slots, for tables of one symbol, of many
// rare symbols, and of frequencies on and off multiples of 16.
TEST(Rans, DecodeTableSameOnAndOffTheVectorPath) {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<std::uint32_t> counts(max_symbols, 0);
        const int used = trial == 0 ? 1 : 1 + static_cast<int>(rng() % max_symbols);
        for (int i = 0; i < used; ++i)
            counts[rng() % max_symbols] += 1 + rng() % (trial % 7 ? 50 : 5000);
        freq_table f;
        ASSERT_TRUE(normalize(counts, f));
        dec_table vec, scalar;
        vec.slot.fill(0xdeadbeef);
        scalar.slot.fill(0xdeadbeef);
        vec.init(f);
        set_avx512_allowed(false);
        scalar.init(f);
        set_avx512_allowed(true);
        ASSERT_EQ(vec.slot, scalar.slot) << "trial " << trial;
    }
}

TEST(BitIo, WritesAndReadsBackMixedWidths) {
    std::vector<std::byte> scratch;
    bit_writer w(scratch, 10000 * 64);
    std::mt19937_64 rng(3);
    std::vector<std::pair<std::uint64_t, unsigned>> vals;
    for (int i = 0; i < 10000; ++i) {
        unsigned n = rng() % 65;
        std::uint64_t v = n == 64 ? rng() : (rng() & ((std::uint64_t{1} << n) - 1));
        vals.emplace_back(v, n);
        w.put_wide(v, n);
    }
    w.finish();
    std::vector<std::byte> buf(w.bytes().begin(), w.bytes().end()), padded_scratch;
    padded_bit_reader r(padded(buf, padded_scratch));
    for (auto [v, n] : vals) {
        ASSERT_EQ(r.get_wide(n), v);
        r.check_bounds();
    }
    EXPECT_FALSE(r.overrun());
    r.get(32);
    r.get(32);
    EXPECT_TRUE(r.overrun());
}

// put and put128 interleaved give the same stream as the same fields one by one.
TEST(BitIo, WideWritesMatchFieldByField) {
    std::mt19937_64 rng(4);
    std::vector<std::byte> wide_scratch, narrow_scratch;
    bit_writer wide(wide_scratch, 3000 * 128), narrow(narrow_scratch, 3000 * 128);
    for (int i = 0; i < 3000; ++i) {
        // four fields of up to 30 bits, written as one piece of their joined bits
        unsigned n[4], total = 0;
        u128 joined = 0;
        for (auto& k : n) {
            k = static_cast<unsigned>(rng() % 31);
            std::uint64_t v = rng() & ((std::uint64_t{1} << k) - 1);
            narrow.put(v, k);
            joined |= u128{v} << total;
            total += k;
        }
        switch (i % 3) {
        case 0:
            wide.put128(joined, total);
            break;
        case 1: // two pieces of <= 60 bits
            wide.put128(joined & ((u128{1} << (n[0] + n[1])) - 1), n[0] + n[1]);
            wide.put128(joined >> (n[0] + n[1]), n[2] + n[3]);
            break;
        default: // two pieces of <= 56 bits where they fit
            if (total <= 56) {
                wide.put(static_cast<std::uint64_t>(joined), total);
            } else {
                wide.put128(joined, total);
            }
        }
    }
    wide.finish();
    narrow.finish();
    ASSERT_EQ(wide.bytes().size(), narrow.bytes().size());
    EXPECT_TRUE(std::equal(wide.bytes().begin(), wide.bytes().end(), narrow.bytes().begin()));
}

TEST(Rans, TableWireFormatRejectsBadSums) {
    freq_table f{};
    f[0] = prob_scale - 96;
    f[5] = 96;
    std::vector<std::byte> buf;
    byte_sink sink(buf);
    write_tables(sink, std::span<const freq_table>(&f, 1), 64);
    freq_table back;
    byte_source src(buf);
    read_tables(src, std::span<freq_table>(&back, 1), 64);
    EXPECT_EQ(back, f);
    buf.back() = std::byte{0x10}; // freq of symbol 5 changed: no longer sums to scale
    byte_source bad(buf);
    EXPECT_THROW(read_tables(bad, std::span<freq_table>(&back, 1), 64), tpde::codec::decode_error);
}

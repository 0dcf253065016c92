// One concept in one file (over 500 lines on purpose): the dense and sparse delta methods,
// encoder and decoder side by side so the symbol, context and raw-bit layout they share is
// read in one place (residual.hpp describes the coding).
#include "residual.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <utility>

#include "analyze_simd.hpp"
#include "bit_io.hpp"
#include "byte_io.hpp"
#include "rans.hpp"
#include "rans_simd.hpp"
#include "tpde/util/scratch.hpp"

namespace tpde::codec::detail {
namespace {

struct layout {
    unsigned exp_shift;
    unsigned exp_bits; // 0: no exponent, one context
    bool float_order;  // map sign-magnitude to an order-preserving integer before subtracting
};

// The floats the AVX-512 kernels code 16 at a time (analyze_simd.cpp, rans_simd.cpp): 32-bit
// and 16-bit ones, whose residuals have 64 or 32 symbols.
constexpr bool has_vector_path(element_type t) {
    return t == element_type::f32 || t == element_type::bf16 || t == element_type::f16;
}

constexpr layout layout_of(element_type t) {
    switch (t) {
    case element_type::f16:
        return {10, 5, true};
    case element_type::bf16:
        return {7, 8, true};
    case element_type::f32:
        return {23, 8, true};
    case element_type::f64:
        return {52, 11, true};
    case element_type::bytes:
        break;
    }
    return {0, 0, false};
}

// The unsigned word of an element type; hot loops are instantiated per type, so the layout
// (float order, exponent position) is a constant there, not a load and a branch.
template <element_type T>
using word_t = std::conditional_t<
    width_of(T) == 1, std::uint8_t,
    std::conditional_t<width_of(T) == 2, std::uint16_t,
                       std::conditional_t<width_of(T) == 4, std::uint32_t, std::uint64_t>>>;

template <typename U>
constexpr unsigned bits_of = 8 * sizeof(U);
template <typename U>
constexpr unsigned symbols_of = 2 * bits_of<U>;

template <typename U>
inline U load(const std::byte* base, std::size_t i) {
    U v;
    std::memcpy(&v, base + i * sizeof(U), sizeof(U));
    return v;
}
template <typename U>
inline void store(std::byte* base, std::size_t i, U v) {
    std::memcpy(base + i * sizeof(U), &v, sizeof(U));
}

// Order-preserving map of IEEE sign-magnitude bits to unsigned integers, and back.
template <typename U>
inline U to_ordered(U x, bool float_order) {
    constexpr U sign = U{1} << (bits_of<U> - 1);
    if (!float_order) return x;
    return (x & sign) ? U(~x) : U(x | sign);
}
template <typename U>
inline U from_ordered(U x, bool float_order) {
    constexpr U sign = U{1} << (bits_of<U> - 1);
    if (!float_order) return x;
    return (x & sign) ? U(x & ~sign) : U(~x);
}
template <typename U>
inline U zigzag(U r) {
    using S = std::make_signed_t<U>;
    return U(r << 1) ^ U(S(r) >> (bits_of<U> - 1));
}
template <typename U>
inline U unzigzag(U z) {
    return U(z >> 1) ^ U(0 - (z & 1));
}

// Symbol of a zigzag residual: 0, 1, or 2*(n-1)+b for bit length n >= 2 and b the bit below
// the leading one; n-2 raw bits follow.
// std::bit_width without a branch for zero: the widened 2z+1 is never zero, so the compiler
// emits a bare bsr (a portable build has no lzcnt); the branch it adds otherwise mispredicts
// wherever unchanged elements are common.
template <typename U>
inline unsigned bit_width_of(U z) {
    if constexpr (sizeof(U) < 8) {
        return static_cast<unsigned>(63 - __builtin_clzll((std::uint64_t{z} << 1) | 1));
    } else {
        return static_cast<unsigned>(std::bit_width(z));
    }
}

template <typename U>
inline unsigned symbol_of(U z, unsigned& nraw) {
    // Branch-free: whether an element changed at all is data, not a pattern.
    // Written as masks: compilers turn the conditional form into branches.
    unsigned n = bit_width_of(z);
    unsigned big = 0u - unsigned(n >= 2); // all ones when n >= 2
    nraw = (n - 2) & big;
    unsigned below = static_cast<unsigned>(z >> nraw) & 1;
    return n + ((n - 2 + below) & big);
}

template <typename U>
struct symbol_info {
    U high;             // leading one and the bit below it, in place
    std::uint8_t nraw;  // raw bits below
    std::uint8_t valid; // 0 for symbols no table may produce
};

template <typename U>
const std::array<symbol_info<U>, 256>& symbol_infos() {
    static const auto table = [] {
        std::array<symbol_info<U>, 256> t{};
        for (unsigned s = 0; s < symbols_of<U>; ++s) {
            if (s < 2) {
                t[s] = {U(s), 0, 1};
            } else {
                unsigned n = s / 2 + 1;
                t[s] = {U(U(2 | (s & 1)) << (n - 2)), static_cast<std::uint8_t>(n - 2), 1};
            }
        }
        return t;
    }();
    return table;
}

// Maps a reference element's exponent to one of max_contexts contexts: one per exponent for
// the top max_contexts-1 exponents below `top`, everything smaller shares context 0.
struct context_map {
    layout lay;
    std::vector<std::uint8_t> lut; // exponent -> context
    unsigned top{0};

    context_map(layout l, unsigned top_exponent) : lay(l), top(top_exponent) {
        if (lay.exp_bits == 0) {
            lut.assign(1, 0);
            return;
        }
        lut.resize(std::size_t{1} << lay.exp_bits);
        for (std::size_t e = 0; e < lut.size(); ++e) {
            long c = static_cast<long>(e) - (static_cast<long>(top) - (max_contexts - 1));
            lut[e] = static_cast<std::uint8_t>(std::clamp<long>(c, 0, max_contexts - 1));
        }
    }
    template <typename U>
    unsigned operator()(U ref) const {
        if (lay.exp_bits == 0) return 0;
        return lut[(ref >> lay.exp_shift) & ((U{1} << lay.exp_bits) - 1)];
    }
    unsigned contexts() const { return lay.exp_bits == 0 ? 1 : max_contexts; }
};

// The largest finite exponent among the reference elements: contexts are placed below it.
// Only a choice of contexts, sent in the frame; every path scans every element, so vector
// and scalar encoders write the same frames.
template <typename U>
unsigned top_exponent(layout lay, const std::byte* ref, std::size_t n) {
    if (lay.exp_bits == 0) return 0;
    // f32, bf16 and f16 keep their exponent just below the sign of their top 16 bits.
    if (lay.float_order && (sizeof(U) == 4 || sizeof(U) == 2) && have_avx512())
        return top_exponent_avx512(ref, n, sizeof(U), lay.exp_bits);
    const U mask = (U{1} << lay.exp_bits) - 1;
    U top = 0;
    for (std::size_t i = 0; i < n; ++i) {
        U e = (load<U>(ref, i) >> lay.exp_shift) & mask;
        top = std::max<U>(top, e == mask ? U{0} : e);
    }
    return static_cast<unsigned>(top);
}

inline unsigned elias_delta_bits(std::uint64_t g) {
    unsigned l = static_cast<unsigned>(std::bit_width(g));
    unsigned ll = static_cast<unsigned>(std::bit_width(l));
    return 2 * ll - 1 + l - 1;
}
inline void put_elias_delta(bit_writer& bw, std::uint32_t g) {
    unsigned l = static_cast<unsigned>(std::bit_width(g));
    unsigned ll = static_cast<unsigned>(std::bit_width(l));
    bw.put(std::uint64_t{1} << (ll - 1), ll);                    // ll-1 zeros, then a one
    bw.put(l & ((1u << (ll - 1)) - 1), ll - 1);                  // l below its leading one
    bw.put_wide(g & ((std::uint64_t{1} << (l - 1)) - 1), l - 1); // g below its leading one
}
inline std::uint32_t get_elias_delta(padded_bit_reader& br) {
    std::uint32_t peek = br.peek32();
    if (peek == 0) throw decode_error("corrupt frame: bad position code");
    unsigned zeros = static_cast<unsigned>(std::countr_zero(peek));
    if (zeros > 5) throw decode_error("corrupt frame: bad position code");
    unsigned ll = zeros + 1;
    br.get(ll);
    unsigned l = static_cast<unsigned>((1u << (ll - 1)) | br.get(ll - 1));
    if (l > 32) throw decode_error("corrupt frame: bad position code");
    return static_cast<std::uint32_t>((std::uint64_t{1} << (l - 1)) | br.get_wide(l - 1));
}

// Per-context symbol counts, indexed by context * max_symbols + symbol.
template <typename U>
struct histogram {
    std::array<std::uint32_t, max_contexts * max_symbols> counts{};

    std::span<const std::uint32_t> of(unsigned c) const {
        return {counts.data() + c * max_symbols, symbols_of<U>};
    }
    enum class cost { entropy, entropy_and_tables, coded_and_tables };
    // What the symbols cost: their entropy, or what rANS spends with the frequencies they
    // normalise to (a normalisation per context); plus, but for `entropy`, an estimate of
    // the tables' own size.
    double bits(unsigned contexts, bool without_zero, cost how) const {
        double bits = 0;
        for (unsigned c = 0; c < contexts; ++c) {
            auto h = of(c);
            if (without_zero) h = h.subspan(1);
            bits += how == cost::coded_and_tables ? detail::coded_bits(h) : entropy_bits(h);
            if (how == cost::entropy) continue;
            // Table cost: presence bitmap plus ~1.5 bytes per present symbol.
            unsigned present = 0;
            for (auto v : h) present += v != 0;
            bits += symbols_of<U> + 12.0 * present;
        }
        return bits;
    }
};

template <typename U>
struct analysis {
    histogram<U> hist;
    std::vector<std::uint16_t> syms; // context * max_symbols + symbol, per element
    std::vector<std::byte> raw_scratch;
    std::span<const std::byte> raw_bits; // in raw_scratch
    std::size_t changed{0};
    double raw_bit_count{0};
};

// Per-thread scratch, reused across blocks: allocating and faulting in fresh buffers per
// block measured slower than the coding. Slot 0 encodes, slot 1 probes element types.
template <typename U>
analysis<U>& scratch_analysis(int slot) {
    thread_local std::unique_ptr<analysis<U>> slots[2];
    auto& a = slots[slot];
    if (!a) a = std::make_unique<analysis<U>>();
    a->hist = {};
    return *a;
}

// Pass 1: symbols with their contexts, raw bits, per-context histogram.
template <element_type T, typename U = word_t<T>>
void analyze(const context_map& ctx, const std::byte* blk, const std::byte* ref, std::size_t n,
             analysis<U>& a) {
    constexpr layout lay = layout_of(T);
    constexpr U exp_mask = lay.exp_bits ? U((U{1} << lay.exp_bits) - 1) : U{0};
    const std::uint8_t* lut = ctx.lut.data();
    a.syms.resize(n);
    bit_writer bw(a.raw_scratch, n * (bits_of<U> - 2));
    std::uint64_t raw_total = 0, changed = 0;
    constexpr bool fo = lay.float_order;
    // A local pointer: the stores below could alias the vector's own, which the compiler
    // would otherwise reload for every element.
    std::uint16_t* const syms = a.syms.data();
    std::size_t i = 0;
    if constexpr (has_vector_path(T)) {
        if (have_avx512()) {
            analyze_input v{blk,
                            ref,
                            static_cast<int>(ctx.top) - static_cast<int>(max_contexts - 1),
                            lay.exp_shift,
                            exp_mask,
                            syms,
                            a.hist.counts.data()};
            auto totals = analyze_rounds_avx512(v, sizeof(U), n / 16, bw);
            raw_total = totals.raw_bits;
            changed = totals.changed;
            i = n / 16 * 16;
        }
    }
    for (; i < n; ++i) {
        U r = load<U>(ref, i);
        U z = zigzag<U>(U(to_ordered(load<U>(blk, i), fo) - to_ordered(r, fo)));
        unsigned nraw;
        unsigned s = symbol_of(z, nraw);
        unsigned cs = lut[(r >> lay.exp_shift) & exp_mask] * max_symbols + s;
        syms[i] = static_cast<std::uint16_t>(cs);
        ++a.hist.counts[cs];
        if constexpr (sizeof(U) == 8) {
            bw.put_wide(z & ((U{1} << nraw) - 1), nraw);
        } else {
            bw.put(static_cast<std::uint64_t>(z & ((U{1} << nraw) - 1)), nraw);
        }
        raw_total += nraw;
        changed += s != 0;
    }
    bw.finish();
    a.raw_bits = bw.bytes();
    a.raw_bit_count = static_cast<double>(raw_total);
    a.changed = changed;
}

inline bool is_unchanged(std::uint16_t ctxsym) {
    return ctxsym % max_symbols == 0;
}

// What the sparse form spends on positions: Elias-delta codes of the gaps between changed
// elements.
inline double position_bits(std::span<const std::uint16_t> syms) {
    std::uint64_t bits = 0;
    std::size_t last = std::numeric_limits<std::size_t>::max(); // "position -1"
    for (std::size_t i = 0; i < syms.size(); ++i) {
        // Branch-free: whether an element changed is data, not a pattern.
        bool changed = !is_unchanged(syms[i]);
        bits += changed ? elias_delta_bits(i - last) : 0;
        last = changed ? i : last;
    }
    return static_cast<double>(bits);
}

template <typename U>
void write_section(const context_map& ctx, std::size_t n, const analysis<U>& a, bool sparse,
                   unsigned lanes, byte_sink& out) {
    std::array<freq_table, max_contexts> freqs{};
    thread_local std::unique_ptr<std::array<enc_table, max_contexts>> tables;
    if (!tables) tables = std::make_unique<std::array<enc_table, max_contexts>>();
    const unsigned nctx = ctx.contexts();
    for (unsigned c = 0; c < nctx; ++c) {
        std::array<std::uint32_t, max_symbols> counts{};
        std::ranges::copy(a.hist.of(c), counts.begin());
        if (sparse) counts[0] = 0;
        normalize(std::span<const std::uint32_t>(counts.data(), symbols_of<U>), freqs[c]);
        (*tables)[c].init(freqs[c]);
    }
    out.put(static_cast<std::uint16_t>(ctx.top));
    write_tables(out, std::span<const freq_table>(freqs.data(), nctx), symbols_of<U>);

    // The tables are contiguous, so a context*max_symbols+symbol index addresses them flat.
    const enc_symbol* flat = (*tables)[0].sym.data();
    static_assert(sizeof(enc_table) == max_symbols * sizeof(enc_symbol));
    // The coded symbols in order: only the changed ones when sparse.
    const std::uint16_t* coded = a.syms.data();
    const std::size_t count = sparse ? a.changed : n;
    thread_local std::vector<std::uint16_t> changed_syms;
    if (sparse) {
        const auto dst = util::grown_to(changed_syms, a.changed + 1);
        std::size_t k = 0;
        for (std::size_t i = 0; i < n; ++i) { // branch-free: write, advance if changed
            dst[k] = a.syms[i];
            k += !is_unchanged(a.syms[i]);
        }
        coded = dst.data();
    }
    // Symbol k uses state k % lanes, coded from the end: the last partial round one by one,
    // then whole rounds 16 lanes at a time where the CPU can.
    thread_local std::vector<std::uint16_t> words;
    rans_encoder enc(words, count);
    std::array<std::uint32_t, max_rans_lanes> x;
    x.fill(rans_low);
    const std::size_t lane_mask = lanes - 1; // lanes is a power of two
    const std::size_t whole = lanes == max_rans_lanes && have_avx512() ? count / 16 * 16 : 0;
    for (std::size_t k = count; k-- > whole;) enc.put(x[k & lane_mask], flat[coded[k]]);
    if (whole) encode_rounds_avx512(x.data(), enc.cursor(), flat, coded, whole / 16);
    for (unsigned l = lanes; l-- > 0;) enc.flush(x[l]);
    auto len_pos = out.size();
    out.put<std::uint32_t>(0);
    enc.finish(out);
    store_le(out.buffer().data() + len_pos, static_cast<std::uint32_t>(out.size() - len_pos - 4));
    out.put_bytes(a.raw_bits);
}

// Below this many coded elements, 16 states' 64 bytes of flushed state outweigh the speed.
constexpr std::size_t min_elements_for_16_lanes = 1024;

template <element_type T, typename U = word_t<T>>
delta_result encode_typed(std::span<const std::byte> block, std::span<const std::byte> reference,
                          bool allow_dense, bool allow_sparse, unsigned lanes,
                          std::vector<std::byte>& payload, const delta_proceed& proceed) {
    constexpr layout lay = layout_of(T);
    const std::size_t n = block.size() / sizeof(U);
    context_map ctx(lay, top_exponent<U>(lay, reference.data(), n));
    analysis<U>* a = &scratch_analysis<U>(0);
    analyze<T>(ctx, block.data(), reference.data(), n, *a);

    using cost = typename histogram<U>::cost;
    const unsigned nctx = ctx.contexts();
    bool sparse = allow_sparse && !allow_dense;
    // What the sparse form spends on positions; a pass over every element, so taken once.
    double positions = -1;
    auto positions_bits = [&] {
        return positions >= 0 ? positions : positions = position_bits(a->syms);
    };
    // Positions cost a few bits per changed element: with a quarter or more changed the
    // dense form wins in practice (measured on real checkpoints), so the pass is skipped.
    if (allow_sparse && allow_dense && 4 * a->changed < n) {
        double dense_bits = a->hist.bits(nctx, false, cost::coded_and_tables);
        double sparse_bits = positions_bits() + a->hist.bits(nctx, true, cost::coded_and_tables);
        sparse = sparse_bits < dense_bits;
    }
    if (proceed) {
        double bits = a->hist.bits(nctx, sparse, cost::entropy_and_tables) + a->raw_bit_count;
        if (sparse) bits += positions_bits();
        // Plus the odd tail, the flushed states and the section headers.
        const double bytes = bits / 8 + double(block.size() - n * sizeof(U)) + 4 * lanes + 16;
        if (!proceed(static_cast<std::size_t>(bytes)))
            return {sparse ? method::sparse : method::dense, a->changed, lanes, false};
    }

    byte_sink out(payload);
    out.put_bytes(block.subspan(n * sizeof(U))); // the odd tail, raw
    if (sparse) {
        out.put(static_cast<std::uint32_t>(a->changed));
        std::vector<std::byte> pos_scratch;
        bit_writer bw(pos_scratch, a->changed * 48 + 64); // <= 42 bits per 32-bit gap
        std::size_t last = std::numeric_limits<std::size_t>::max();
        for (std::size_t i = 0; i < n; ++i) {
            if (is_unchanged(a->syms[i])) continue;
            put_elias_delta(bw, static_cast<std::uint32_t>(i - last));
            last = i;
        }
        bw.finish();
        out.put(static_cast<std::uint32_t>(bw.bytes().size()));
        out.put_bytes(bw.bytes());
    }
    const std::size_t coded = sparse ? a->changed : n;
    if (coded < min_elements_for_16_lanes) lanes = 2;
    write_section<U>(ctx, n, *a, sparse, lanes, out);
    return {sparse ? method::sparse : method::dense, a->changed, lanes};
}

// Decodes the residual section for the elements at `positions` (all of them when dense).
template <element_type T, bool Sparse, unsigned L, typename U = word_t<T>>
void decode_section(byte_source& in, const std::byte* ref, std::size_t n,
                    std::span<const std::uint32_t> positions, std::byte* out) {
    constexpr layout lay = layout_of(T);
    auto top = in.get<std::uint16_t>();
    if (lay.exp_bits && top >= (1u << lay.exp_bits))
        throw decode_error("corrupt frame: bad exponent");
    context_map ctx(lay, top);
    const unsigned nctx = ctx.contexts();
    std::array<freq_table, max_contexts> freqs{};
    read_tables(in, std::span<freq_table>(freqs.data(), nctx), symbols_of<U>);
    // Only contexts in use get a table of their own; the others share one (the last, built
    // once per thread) that maps every slot to an invalid symbol: building a table costs
    // about as much as decoding a small block.
    constexpr unsigned unused = max_contexts;
    thread_local std::unique_ptr<std::array<dec_table, max_contexts + 1>> storage;
    if (!storage) {
        storage = std::make_unique<std::array<dec_table, max_contexts + 1>>();
        (*storage)[unused].init(freq_table{});
    }
    std::array<const dec_table*, max_contexts> tables;
    alignas(64) std::array<std::uint32_t, max_contexts> table_index;
    for (unsigned c = 0; c < max_contexts; ++c) {
        table_index[c] = unused;
        if (c >= nctx ||
            std::all_of(freqs[c].begin(), freqs[c].end(), [](auto f) { return f == 0; }))
            continue;
        (*storage)[c].init(freqs[c]);
        table_index[c] = c;
    }
    for (unsigned c = 0; c < max_contexts; ++c) tables[c] = &(*storage)[table_index[c]];
    // Exponent -> table directly: one load per element instead of two.
    std::array<const dec_table*, 2048> table_of_exponent;
    for (std::size_t e = 0; e < ctx.lut.size(); ++e) table_of_exponent[e] = tables[ctx.lut[e]];
    constexpr unsigned exp_shift = lay.exp_shift;
    constexpr U exp_mask = lay.exp_bits ? U((U{1} << lay.exp_bits) - 1) : U{0};

    // Both streams are read from padded copies: no bounds checks in the loop, only
    // check_bounds() once per run.
    thread_local std::vector<std::byte> rans_scratch, bits_scratch;
    auto rans_len = in.get<std::uint32_t>();
    rans_decoder<L> dec(padded(in.get_bytes(rans_len), rans_scratch));
    padded_bit_reader bits(padded(in.rest(), bits_scratch));
    const auto& info = symbol_infos<U>();
    constexpr bool fo = lay.float_order;
    unsigned bad = 0;
    const std::size_t count = Sparse ? positions.size() : n;

    auto one = [&]<unsigned K>(std::size_t k) {
        std::size_t i = Sparse ? positions[k] : k;
        U r = load<U>(ref, i);
        unsigned s = dec.template get<K>(*table_of_exponent[(r >> exp_shift) & exp_mask]);
        const auto& si = info[s];
        bad |= si.valid ^ 1u;
        U z;
        if constexpr (sizeof(U) == 8) {
            z = si.high | static_cast<U>(bits.get_wide(si.nraw));
        } else {
            z = si.high | static_cast<U>(bits.get(si.nraw));
        }
        store<U>(out, i, from_ordered<U>(U(to_ordered(r, fo) + unzigzag(z)), fo));
    };
    // Element k uses state k % L: whole rounds of L, then the last partial round.
    auto round = [&]<unsigned... K>(std::size_t k, std::integer_sequence<unsigned, K...>) {
        (one.template operator()<K>(k + K), ...);
    };
    auto partial = [&]<unsigned... K>(std::size_t k, std::size_t left,
                                      std::integer_sequence<unsigned, K...>) {
        ((K < left ? one.template operator()<K>(k + K) : void()), ...);
    };
    constexpr std::size_t run = rans_decoder<L>::max_run_between_checks; // a multiple of L
    std::size_t k = 0;
    if constexpr (has_vector_path(T) && L == 16) {
        if (have_avx512()) {
            static_assert(sizeof(dec_table) == prob_scale * sizeof(std::uint32_t));
            bool vector_bad = false;
            round_input v{dec.states().data(),
                          &dec.cursor(),
                          dec.end(),
                          bits.data(),
                          &bits.position(),
                          bits.size_bits(),
                          (*storage)[0].slot.data(),
                          table_index.data(),
                          static_cast<int>(ctx.top) - static_cast<int>(max_contexts - 1),
                          lay.exp_shift,
                          exp_mask,
                          ref,
                          out,
                          n,
                          Sparse ? positions.data() : nullptr};
            k = 16 * decode_rounds_avx512(v, sizeof(U), Sparse, 0, count / 16, vector_bad);
            bad |= vector_bad;
            dec.check_bounds();
            bits.check_bounds();
        }
    }
    for (; k < count;) {
        const std::size_t end = std::min(count, k + run);
        for (; k + L <= end; k += L) round(k, std::make_integer_sequence<unsigned, L>{});
        if (k < end) {
            partial(k, end - k, std::make_integer_sequence<unsigned, L>{});
            k = end;
        }
        dec.check_bounds();
        bits.check_bounds();
    }
    if (bad || bits.overrun() || !dec.finished_cleanly())
        throw decode_error("corrupt frame: residual stream does not decode cleanly");
}

template <element_type T, unsigned L, typename U = word_t<T>>
void decode_typed(method m, std::span<const std::byte> payload,
                  std::span<const std::byte> reference, std::span<std::byte> out) {
    const std::size_t n = out.size() / sizeof(U);
    byte_source in(payload);
    auto tail = in.get_bytes(out.size() - n * sizeof(U));
    copy_bytes(out.subspan(n * sizeof(U)), tail);
    if (m == method::dense) {
        decode_section<T, false, L>(in, reference.data(), n, {}, out.data());
        return;
    }
    auto changed = in.get<std::uint32_t>();
    if (changed > n) throw decode_error("corrupt frame: more changed elements than elements");
    auto pos_len = in.get<std::uint32_t>();
    auto pos_bytes = in.get_bytes(pos_len);
    // Each position costs at least one bit, so a short stream cannot claim many positions.
    if (changed > 8 * std::uint64_t{pos_len})
        throw decode_error("corrupt frame: position stream too short");
    std::vector<std::uint32_t> positions(changed);
    thread_local std::vector<std::byte> pos_scratch;
    padded_bit_reader br(padded(pos_bytes, pos_scratch));
    std::uint64_t pos = std::numeric_limits<std::uint64_t>::max();
    for (auto& p : positions) {
        pos += get_elias_delta(br);
        if (pos >= n || br.overrun()) throw decode_error("corrupt frame: position out of range");
        p = static_cast<std::uint32_t>(pos);
    }
    copy_bytes(out, reference.first(n * sizeof(U))); // unchanged elements
    decode_section<T, true, L>(in, reference.data(), n, positions, out.data());
}

// Calls f with the element type as a compile-time constant.
template <typename F>
decltype(auto) with_type(element_type t, F&& f) {
    using E = element_type;
    switch (t) {
    case E::f16:
        return f(std::integral_constant<E, E::f16>{});
    case E::bf16:
        return f(std::integral_constant<E, E::bf16>{});
    case E::f32:
        return f(std::integral_constant<E, E::f32>{});
    case E::f64:
        return f(std::integral_constant<E, E::f64>{});
    case E::bytes:
        break;
    }
    return f(std::integral_constant<E, E::bytes>{});
}

} // namespace

delta_result encode_delta(element_type t, std::span<const std::byte> block,
                          std::span<const std::byte> reference, bool allow_dense, bool allow_sparse,
                          std::vector<std::byte>& payload, unsigned lanes,
                          const delta_proceed& proceed) {
    if (lanes != 2 && lanes != max_rans_lanes)
        throw std::invalid_argument("tpde encode: rANS lanes must be 2 or 16");
    return with_type(t, [&](auto type) {
        return encode_typed<type()>(block, reference, allow_dense, allow_sparse, lanes, payload,
                                    proceed);
    });
}

double estimate_delta_bits(element_type t, std::span<const std::byte> block,
                           std::span<const std::byte> reference) {
    return with_type(t, [&](auto type) {
        using U = word_t<type()>;
        const std::size_t n = block.size() / sizeof(U);
        constexpr layout lay = layout_of(type());
        context_map ctx(lay, top_exponent<U>(lay, reference.data(), n));
        auto* a = &scratch_analysis<U>(1);
        analyze<type()>(ctx, block.data(), reference.data(), n, *a);
        // Without table costs: they do not shrink with the sample, and would favour types
        // with fewer contexts on a small one.
        return a->hist.bits(ctx.contexts(), false, histogram<U>::cost::entropy) + a->raw_bit_count +
               8.0 * (block.size() - n * sizeof(U));
    });
}

void decode_delta(method m, element_type t, std::span<const std::byte> payload,
                  std::span<const std::byte> reference, std::span<std::byte> out, unsigned lanes) {
    with_type(t, [&](auto type) {
        if (lanes == max_rans_lanes)
            decode_typed<type(), max_rans_lanes>(m, payload, reference, out);
        else
            decode_typed<type(), 2>(m, payload, reference, out);
    });
}

} // namespace tpde::codec::detail

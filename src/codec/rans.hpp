#pragma once
// Static, context-modelled rANS (Duda; the layout follows ryg's public-domain rans_word):
// states in [2^15, 2^31) (so the encoder's reciprocal division, exact for 31-bit numerators,
// applies), 16-bit renormalisation, 10-bit probabilities, interleaved states: element k
// uses state k % lanes. Frames of the first layout have 2 lanes; new ones 16, which a
// vector decoder steps all at once (one state's chain of dependent steps was the limit).
// Written here rather than taken from zstd because we need many small per-context tables
// with fractional-bit costs: Huffman's one-bit floor per symbol loses most of the gain on
// sparse bf16 deltas (measured: 10.8x vs an ~18x estimate).
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "byte_io.hpp"
#include "tpde/util/scratch.hpp"

namespace tpde::codec::detail {

inline constexpr unsigned prob_bits = 10;
inline constexpr std::uint32_t prob_scale = 1u << prob_bits;
static_assert(prob_scale <= 0xfff, "dec_table packs a frequency in 12 bits");
inline constexpr std::uint32_t rans_low = 1u << 15;
inline constexpr unsigned max_symbols = 128;
inline constexpr unsigned max_contexts = 16;
inline constexpr unsigned max_rans_lanes = 16;

// Readable bytes that must follow a stream handed to rans_decoder or padded_bit_reader.
inline constexpr std::size_t stream_padding = 512;

// `in` copied into `scratch` with stream_padding zero bytes after it; returns the copy
// (without the padding).
std::span<const std::byte> padded(std::span<const std::byte> in, std::vector<std::byte>& scratch);

// Frequencies of one context, summing to prob_scale when the context is used, all zero
// when not.
using freq_table = std::array<std::uint16_t, max_symbols>;

// Scales counts to prob_scale keeping every seen symbol at >= 1. Returns false if the
// context saw nothing.
bool normalize(std::span<const std::uint32_t> counts, freq_table& freqs);

// Order-0 entropy of `counts`, in bits.
double entropy_bits(std::span<const std::uint32_t> counts);
// What rANS actually spends on `counts` with the frequencies they normalise to (differs
// from the entropy where probabilities hit the table's resolution).
double coded_bits(std::span<const std::uint32_t> counts);

// Per-context tables on the wire: a presence bitmap then freq-1 as varints.
void write_tables(byte_sink& out, std::span<const freq_table> tables, unsigned symbols);
void read_tables(byte_source& in, std::span<freq_table> tables, unsigned symbols);

struct enc_symbol {
    std::uint64_t x_max;
    std::uint32_t rcp_freq;
    std::uint32_t bias;
    std::uint16_t cmpl_freq;
    std::uint16_t rcp_shift;
    // For the vector encoder, which fetches each field by a gather: cmpl_freq | rcp_shift << 11
    // | bias << 16 in one (x_max follows from cmpl_freq), so two gathers a round instead of
    // four.
    std::uint32_t packed;
};

struct enc_table {
    std::array<enc_symbol, max_symbols> sym;
    void init(const freq_table& f);
};

// Words are produced back to front (the encoder runs over the elements in reverse) into a
// buffer sized for one word per symbol, so they come out in decoding order. The buffer is
// the caller's scratch, grown but never cleared: zeroing it per block cost 5% of a bf16
// encode.
class rans_encoder {
public:
    rans_encoder(std::vector<std::uint16_t>& scratch, std::size_t symbols) {
        const auto words = util::grown_to(scratch, symbols + 2 * max_rans_lanes + 8);
        end_ = p_ = words.data() + words.size();
    }
    void put(std::uint32_t& x, const enc_symbol& s) {
        // Branch-free renormalisation: always store the low word, keep it only if needed.
        std::uint32_t emit = x >= s.x_max;
        p_[-1] = static_cast<std::uint16_t>(x);
        p_ -= emit;
        x >>= emit << 4; // arithmetic, not a conditional the compiler would make a branch
        std::uint32_t q =
            static_cast<std::uint32_t>((static_cast<std::uint64_t>(x) * s.rcp_freq) >> 32) >>
            s.rcp_shift;
        x += s.bias + q * s.cmpl_freq;
    }
    // Flush the last lane's state first, state 0 last: the decoder reads state 0 first.
    void flush(std::uint32_t x) {
        *--p_ = static_cast<std::uint16_t>(x >> 16);
        *--p_ = static_cast<std::uint16_t>(x);
    }
    // Appends the stream in decoding order.
    void finish(byte_sink& out) const;
    // For a vector encoder writing the same stream: words go below it.
    std::uint16_t*& cursor() { return p_; }

private:
    std::uint16_t* end_;
    std::uint16_t* p_;
};

inline constexpr std::uint32_t invalid_symbol = 255;

// Decode table of one context; each slot packs everything the hot loop needs in 32 bits:
// freq | (slot-start) << 12 | symbol << 24 (freq <= prob_scale fits 12 bits; stored as is, not
// minus one, to keep an add off the decoder's chain of dependent steps).
struct dec_table {
    std::array<std::uint32_t, prob_scale> slot;
    // An unused context maps every slot to invalid_symbol; decoding one is an error.
    void init(const freq_table& f);
};

// Reads a stream with `L` interleaved states that is followed by stream_padding readable
// bytes (see padded()), so the hot loop loads without bounds checks and renormalises without
// a data-dependent branch. Callers run check_bounds() at least every max_run_between_checks
// symbols: running past the end is then caught (and clamped) before the padding is exhausted.
template <unsigned L>
class rans_decoder {
public:
    static constexpr std::size_t max_run_between_checks = 64; // at most 2 bytes each
    static_assert(max_run_between_checks % L == 0);
    explicit rans_decoder(std::span<const std::byte> padded_in)
        : p_(padded_in.data()), end_(padded_in.data() + padded_in.size()) {
        if (padded_in.size() < 4 * L) overrun_ = true;
        for (auto& x : x_) x = read_state();
    }
    // Decodes one symbol with state `K` from `table`.
    template <unsigned K>
    std::uint32_t get(const dec_table& table) {
        std::uint32_t& x = x_[K];
        std::uint32_t e = table.slot[x & (prob_scale - 1)];
        x = (e & 0xfff) * (x >> prob_bits) + ((e >> 12) & 0xfff);
        // Arithmetic, not a conditional: compilers turn the ternary form back into a branch,
        // and whether a word is needed is data, so that branch mispredicts.
        std::uint32_t w = load_le<std::uint16_t>(p_);
        std::uint32_t need = x < rans_low;
        x = (x << (need << 4)) | (w & (0u - need));
        p_ += need << 1;
        return e >> 24;
    }
    void check_bounds() {
        if (p_ > end_) {
            overrun_ = true;
            p_ = end_;
        }
    }
    // A well-formed stream ends exactly where its words end, with every state back at start.
    bool finished_cleanly() {
        check_bounds();
        bool at_start = true;
        for (auto x : x_) at_start &= x == rans_low;
        return !overrun_ && p_ == end_ && at_start;
    }
    // For a vector decoder stepping all lanes at once.
    std::array<std::uint32_t, L>& states() { return x_; }
    const std::byte*& cursor() { return p_; }
    const std::byte* end() const { return end_; }

private:
    std::uint32_t read_state() {
        std::uint32_t lo = load_le<std::uint16_t>(p_);
        std::uint32_t hi = load_le<std::uint16_t>(p_ + 2);
        p_ += 4;
        return lo | (hi << 16);
    }
    const std::byte* p_;
    const std::byte* end_;
    std::array<std::uint32_t, L> x_{};
    bool overrun_{false};
};

} // namespace tpde::codec::detail

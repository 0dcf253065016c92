#include "rans.hpp"

#include "rans_simd.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tpde::codec::detail {

bool normalize(std::span<const std::uint32_t> counts, freq_table& freqs) {
    freqs.fill(0);
    std::uint64_t total = std::accumulate(counts.begin(), counts.end(), std::uint64_t{0});
    if (total == 0) return false;
    std::int64_t sum = 0;
    std::size_t largest = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        auto f = static_cast<std::uint32_t>((std::uint64_t{counts[s]} * prob_scale) / total);
        freqs[s] = static_cast<std::uint16_t>(std::max<std::uint32_t>(f, 1));
        sum += freqs[s];
        if (counts[s] > counts[largest]) largest = s;
    }
    // Rounding error goes to the most frequent symbols, where it costs least.
    while (sum != prob_scale) {
        if (sum < prob_scale) {
            freqs[largest] += static_cast<std::uint16_t>(prob_scale - sum);
            sum = prob_scale;
        } else {
            // Take from the symbol whose cost grows least per unit removed.
            std::size_t best = counts.size();
            double best_cost = 0;
            for (std::size_t s = 0; s < counts.size(); ++s) {
                if (freqs[s] <= 1) continue;
                double cost = counts[s] * std::log2(double(freqs[s]) / (freqs[s] - 1));
                if (best == counts.size() || cost < best_cost) {
                    best = s;
                    best_cost = cost;
                }
            }
            std::int64_t take = std::min<std::int64_t>(sum - prob_scale, freqs[best] - 1);
            take = std::max<std::int64_t>(1, std::min<std::int64_t>(take, freqs[best] / 16 + 1));
            freqs[best] = static_cast<std::uint16_t>(freqs[best] - take);
            sum -= take;
        }
    }
    return true;
}

double coded_bits(std::span<const std::uint32_t> counts) {
    freq_table f;
    if (!normalize(counts, f)) return 0;
    double bits = 0;
    for (std::size_t s = 0; s < counts.size(); ++s)
        if (counts[s]) bits += counts[s] * (prob_bits - std::log2(double(f[s])));
    return bits;
}

double entropy_bits(std::span<const std::uint32_t> counts) {
    double total = 0;
    for (auto c : counts) total += c;
    if (total == 0) return 0;
    double bits = 0;
    for (auto c : counts)
        if (c) bits -= c * std::log2(c / total);
    return bits;
}

void write_tables(byte_sink& out, std::span<const freq_table> tables, unsigned symbols) {
    for (const auto& t : tables) {
        for (unsigned base = 0; base < symbols; base += 8) {
            std::uint8_t mask = 0;
            for (unsigned b = 0; b < 8 && base + b < symbols; ++b)
                if (t[base + b]) mask |= static_cast<std::uint8_t>(1u << b);
            out.put(mask);
        }
        for (unsigned s = 0; s < symbols; ++s)
            if (t[s]) out.put_varint(t[s] - 1u);
    }
}

void read_tables(byte_source& in, std::span<freq_table> tables, unsigned symbols) {
    for (auto& t : tables) {
        t.fill(0);
        std::array<std::uint8_t, max_symbols / 8> masks{};
        for (unsigned base = 0; base < symbols; base += 8) masks[base / 8] = in.get<std::uint8_t>();
        std::uint32_t sum = 0;
        for (unsigned s = 0; s < symbols; ++s) {
            if (!(masks[s / 8] >> (s % 8) & 1)) continue;
            std::uint32_t f = in.get_varint() + 1;
            if (f > prob_scale || sum + f > prob_scale)
                throw decode_error("corrupt frame: probability table overflows");
            t[s] = static_cast<std::uint16_t>(f);
            sum += f;
        }
        if (sum != 0 && sum != prob_scale)
            throw decode_error("corrupt frame: probability table does not sum to scale");
    }
}

void enc_table::init(const freq_table& f) {
    std::uint32_t start = 0;
    for (unsigned s = 0; s < max_symbols; ++s) {
        enc_symbol& e = sym[s];
        std::uint32_t freq = f[s];
        e = {};
        if (freq == 0) continue;
        e.x_max = (std::uint64_t{rans_low >> prob_bits} << 16) * freq;
        e.cmpl_freq = static_cast<std::uint16_t>(prob_scale - freq);
        if (freq < 2) {
            // The reciprocal of 1 does not fit; q = x - 1 with this bias gives x*M + start.
            e.rcp_freq = ~0u;
            e.rcp_shift = 0;
            e.bias = start + prob_scale - 1;
        } else {
            std::uint32_t shift = 0;
            while (freq > (1u << shift)) ++shift;
            e.rcp_freq =
                static_cast<std::uint32_t>(((std::uint64_t{1} << (shift + 31)) + freq - 1) / freq);
            e.rcp_shift = static_cast<std::uint16_t>(shift - 1);
            e.bias = start;
        }
        e.packed = e.cmpl_freq | std::uint32_t{e.rcp_shift} << 11 | e.bias << 16;
        start += freq;
    }
}

void rans_encoder::finish(byte_sink& out) const {
    out.put_bytes(std::as_bytes(std::span<const std::uint16_t>(p_, end_)));
}

std::span<const std::byte> padded(std::span<const std::byte> in, std::vector<std::byte>& scratch) {
    const auto copy = util::grown_to(scratch, in.size() + stream_padding);
    copy_bytes(copy, in);
    std::fill(copy.begin() + static_cast<std::ptrdiff_t>(in.size()), copy.end(), std::byte{0});
    return copy.first(in.size());
}

void dec_table::init(const freq_table& f) {
    if (have_avx512() && std::any_of(f.begin(), f.end(), [](auto v) { return v != 0; })) {
        fill_dec_table_avx512(f.data(), slot.data()); // read_tables checked the sum
        return;
    }
    std::uint32_t start = 0;
    for (unsigned s = 0; s < max_symbols; ++s) {
        for (std::uint32_t k = 0; k < f[s]; ++k) slot[start + k] = f[s] | (k << 12) | (s << 24);
        start += f[s];
    }
    if (start == 0)
        slot.fill(1 | invalid_symbol << 24); // freq 1, bias 0: state shrinks, caught later
}

} // namespace tpde::codec::detail

#pragma once
// LSB-first bit streams for the raw low bits of residuals and for Elias-delta gaps. Both
// sides are branch-free in the common case: a branch per element that depends on the data
// costs more than the coding around it.
#include <bit>
#include <cstdint>
#include <span>
#include <vector>

#include "byte_io.hpp"
#include "tpde/util/scratch.hpp"

namespace tpde::codec::detail {

__extension__ using u128 = unsigned __int128; // GCC and clang; __extension__ keeps -Wpedantic quiet

// Writes into a caller-owned scratch buffer, grown to fit `max_bits` up front; bytes()
// is the stream's length after finish().
class bit_writer {
public:
    bit_writer(std::vector<std::byte>& scratch, std::size_t max_bits) {
        begin_ = p_ = util::grown_to(scratch, max_bits / 8 + 16).data();
    }
    // n <= 56; bits of v above n must be zero.
    void put(std::uint64_t v, unsigned n) {
        acc_ |= v << fill_;
        fill_ += n;
        store_le(p_, acc_);
        unsigned bytes = fill_ >> 3;
        p_ += bytes;
        acc_ >>= 8 * bytes; // bytes <= 7: fill_ was < 8 and n <= 56
        fill_ &= 7;
    }
    // n <= 120 in one step (up to four adjacent 30-bit fields); 16 bytes of room after p_.
    void put128(u128 v, unsigned n) {
        u128 a = (v << (fill_ & 7)) | acc_;
        store_le(p_, static_cast<std::uint64_t>(a));
        store_le(p_ + 8, static_cast<std::uint64_t>(a >> 64));
        unsigned total = fill_ + n;
        p_ += total >> 3;
        acc_ = static_cast<std::uint64_t>(a >> (8 * (total >> 3)));
        fill_ = total & 7;
    }
    void put_wide(std::uint64_t v, unsigned n) { // n <= 64
        if (n > 32) {
            put(v & 0xffffffffu, 32);
            put(v >> 32, n - 32);
        } else {
            put(v, n);
        }
    }
    void finish() {
        if (fill_) {
            store_le(p_, acc_);
            ++p_;
            fill_ = 0;
            acc_ = 0;
        }
    }
    std::span<const std::byte> bytes() const {
        return {begin_, static_cast<std::size_t>(p_ - begin_)};
    }

private:
    std::byte* begin_;
    std::byte* p_;
    std::uint64_t acc_{0};
    unsigned fill_{0};
};

// `in` must be followed by stream_padding readable bytes (see padded() in rans.hpp), so a
// read is one unchecked load: no branch per element in the hot loop. Reading past the end
// yields padding bits; callers run check_bounds() often enough (at most 64 bits per element,
// 64 elements between checks) that the position never leaves the padding, and overrun()
// reports it at the end.
class padded_bit_reader {
public:
    explicit padded_bit_reader(std::span<const std::byte> padded_in)
        : p_(padded_in.data()), total_bits_(8 * std::uint64_t{padded_in.size()}) {}
    std::uint64_t get(unsigned n) { // n <= 56
        std::uint64_t v = (load_le<std::uint64_t>(p_ + (pos_ >> 3)) >> (pos_ & 7)) &
                          ((std::uint64_t{1} << n) - 1);
        pos_ += n;
        return v;
    }
    std::uint64_t get_wide(unsigned n) { // n <= 64
        if (n > 32) {
            auto lo = get(32);
            return lo | (get(n - 32) << 32);
        }
        return get(n);
    }
    // The next 32 bits without consuming them.
    std::uint32_t peek32() const {
        return static_cast<std::uint32_t>(load_le<std::uint64_t>(p_ + (pos_ >> 3)) >> (pos_ & 7));
    }
    void check_bounds() {
        if (pos_ > total_bits_) {
            overrun_ = true;
            pos_ = total_bits_;
        }
    }
    bool overrun() {
        check_bounds();
        return overrun_;
    }
    // For a vector decoder reading the same stream.
    const std::byte* data() const { return p_; }
    std::uint64_t& position() { return pos_; }
    std::uint64_t size_bits() const { return total_bits_; }

private:
    const std::byte* p_;
    std::uint64_t total_bits_;
    std::uint64_t pos_{0};
    bool overrun_{false};
};

} // namespace tpde::codec::detail

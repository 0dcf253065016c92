#pragma once
// LSB-first bit streams for the raw low bits of residuals and for Elias-delta gaps.
#include <bit>
#include <cstdint>
#include <span>
#include <vector>

#include "byte_io.hpp"

namespace tpde::codec::detail {

class bit_writer {
public:
    explicit bit_writer(std::vector<std::byte>& out) : out_(out) {}
    // n <= 32; bits of v above n must be zero.
    void put(std::uint64_t v, unsigned n) {
        acc_ |= v << fill_;
        fill_ += n;
        if (fill_ >= 32) {
            auto pos = out_.size();
            out_.resize(pos + 4);
            store_le(out_.data() + pos, static_cast<std::uint32_t>(acc_));
            acc_ >>= 32;
            fill_ -= 32;
        }
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
        while (fill_ > 0) {
            out_.push_back(static_cast<std::byte>(acc_ & 0xff));
            acc_ >>= 8;
            fill_ = fill_ > 8 ? fill_ - 8 : 0;
        }
    }

private:
    std::vector<std::byte>& out_;
    std::uint64_t acc_{0};
    unsigned fill_{0};
};

// Reading past the end yields zero bits and makes overrun() true, checked once at the end, so
// the hot loop carries no throwing branch.
class bit_reader {
public:
    explicit bit_reader(std::span<const std::byte> in)
        : p_(in.data()), end_(in.data() + in.size()), total_bits_(8 * in.size()) {}
    std::uint64_t get(unsigned n) { // n <= 32
        if (fill_ < n) refill();
        std::uint64_t v = acc_ & ((std::uint64_t{1} << n) - 1);
        acc_ >>= n;
        fill_ -= n;
        consumed_ += n;
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
    std::uint32_t peek32() {
        if (fill_ < 32) refill();
        return static_cast<std::uint32_t>(acc_);
    }
    bool overrun() const { return consumed_ > total_bits_; }

private:
    void refill() {
        if (end_ - p_ >= 4) {
            acc_ |= static_cast<std::uint64_t>(load_le<std::uint32_t>(p_)) << fill_;
            p_ += 4;
            fill_ += 32;
            return;
        }
        while (fill_ < 32) {
            std::uint64_t b = p_ < end_ ? std::to_integer<std::uint8_t>(*p_++) : 0;
            acc_ |= b << fill_;
            fill_ += 8;
        }
    }
    const std::byte* p_;
    const std::byte* end_;
    std::uint64_t total_bits_;
    std::uint64_t consumed_{0};
    std::uint64_t acc_{0};
    unsigned fill_{0};
};

} // namespace tpde::codec::detail

#pragma once
// Little-endian fields in byte buffers: the byte order of every format tpdefs writes (frames,
// objects, containers) and of the checkpoint formats it reads. One helper for all of them;
// each layer adds its own bounds checks and error type.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace tpde::util {

static_assert(std::endian::native == std::endian::little,
              "tpdefs stores little-endian fields with plain copies (x86-64, aarch64)");

template <typename T>
inline T load_le(const std::byte* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <typename T>
inline void store_le(std::byte* p, T v) {
    std::memcpy(p, &v, sizeof v);
}

// memcpy that accepts empty spans (whose data() may be null).
inline void copy_bytes(std::span<std::byte> dst, std::span<const std::byte> src) {
    if (!src.empty()) std::memcpy(dst.data(), src.data(), src.size());
}

// Appends fields to a byte vector.
class byte_sink {
public:
    explicit byte_sink(std::vector<std::byte>& out) : out_(out) {}
    template <typename T>
    void put(T v) {
        auto n = out_.size();
        out_.resize(n + sizeof v);
        store_le(out_.data() + n, v);
    }
    void put_varint(std::uint32_t v) {
        while (v >= 0x80) {
            put<std::uint8_t>(static_cast<std::uint8_t>(v | 0x80));
            v >>= 7;
        }
        put<std::uint8_t>(static_cast<std::uint8_t>(v));
    }
    void put_bytes(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    std::size_t size() const { return out_.size(); }
    std::vector<std::byte>& buffer() { return out_; }

private:
    std::vector<std::byte>& out_;
};

// Reads fields of hostile input: every access is checked against the end of the span, and a
// read past it throws Error("<context>: truncated payload").
template <typename Error>
class byte_source {
public:
    byte_source(std::span<const std::byte> in, const char* context) : in_(in), context_(context) {}
    template <typename T>
    T get() {
        need(sizeof(T));
        T v = load_le<T>(in_.data() + pos_);
        pos_ += sizeof(T);
        return v;
    }
    std::uint32_t get_varint() {
        std::uint32_t v = 0;
        for (int shift = 0; shift < 35; shift += 7) {
            auto b = get<std::uint8_t>();
            v |= static_cast<std::uint32_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) return v;
        }
        throw Error(std::string(context_) + ": overlong varint");
    }
    std::span<const std::byte> get_bytes(std::size_t n) {
        need(n);
        auto s = in_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::span<const std::byte> rest() const { return in_.subspan(pos_); }
    std::size_t remaining() const { return in_.size() - pos_; }

private:
    void need(std::size_t n) const {
        if (n > in_.size() - pos_) throw Error(std::string(context_) + ": truncated payload");
    }
    std::span<const std::byte> in_;
    std::size_t pos_{0};
    const char* context_;
};

} // namespace tpde::util

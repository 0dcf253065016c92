#pragma once
// Bounds-checked reading of untrusted file headers. Every parser throws format_error on
// anything it cannot trust; segment_file() turns that into a generic fallback.
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tpde/util/little_endian.hpp"

namespace tpde::format::detail {

struct format_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Little-endian field at `off`, or format_error when it does not fit.
template <typename T>
T read_le(std::span<const std::byte> b, std::uint64_t off) {
    if (off > b.size() || b.size() - off < sizeof(T)) throw format_error("field past end of file");
    return util::load_le<T>(b.data() + off);
}

inline std::span<const std::byte> sub(std::span<const std::byte> b, std::uint64_t off,
                                      std::uint64_t len) {
    if (off > b.size() || b.size() - off < len) throw format_error("range past end of file");
    return b.subspan(static_cast<std::size_t>(off), static_cast<std::size_t>(len));
}

inline std::string_view as_text(std::span<const std::byte> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline bool starts_with(std::span<const std::byte> b, std::string_view magic) {
    return b.size() >= magic.size() && as_text(b.first(magic.size())) == magic;
}

} // namespace tpde::format::detail

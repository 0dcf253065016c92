#pragma once
// Layout of a decoder fuzz input, shared by the fuzz target and the seed generator:
//   byte 0: target (0 = full decode, 1 = dense, 2 = sparse, 3 = standalone, 4 = patch) in
//           the low 7 bits; bit 7 set: a dense/sparse payload with 16 rANS lanes (else 2)
//   byte 1: element type     bytes 2-3: decoded size (u16)     byte 4: reference seed
//   rest:   the frame (target 0) or the payload (targets 1-3)
// The reference is synthesised from the seed, so the fuzzer need not find one that matches.
#include <cstdint>
#include <random>
#include <vector>

namespace tpde::fuzz {

inline constexpr std::size_t input_header = 5;

inline std::vector<std::byte> make_reference(std::size_t size, std::uint8_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> r(size);
    for (std::size_t i = 0; i < size; ++i)
        r[i] = static_cast<std::byte>((i % 4 == 3) ? 0x3c : rng());
    return r;
}

} // namespace tpde::fuzz

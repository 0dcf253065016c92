#pragma once
// Synthetic blocks for codec tests: floats with the special values that lossless coding
// must keep bit-exact, and "next checkpoint" versions with controlled change.
#include <bit>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

namespace tpde::test {

inline std::vector<std::byte> to_bytes(const void* p, std::size_t n) {
    std::vector<std::byte> v(n);
    if (n) std::memcpy(v.data(), p, n);
    return v;
}

// fp32 weights ~N(0, 0.02) with NaN payloads, -0.0, denormals and infinities mixed in.
inline std::vector<float> weights_f32(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::vector<float> w(n);
    for (auto& x : w) x = d(rng);
    const std::uint32_t specials[] = {0x7fc00001u,
                                      0xffc12345u,
                                      0x7f800001u /* signalling NaN */,
                                      0x80000000u /* -0 */,
                                      0x00000001u /* denormal */,
                                      0x807fffffu,
                                      0x7f800000u /* +inf */,
                                      0xff800000u};
    for (std::size_t i = 0; i < n && i < 8 * 97; i += 97)
        w[i] = std::bit_cast<float>(specials[(i / 97) % 8]);
    return w;
}

// An update step: each element changes with probability p_change by a small relative amount.
inline std::vector<float> step_f32(const std::vector<float>& w, double p_change,
                                   std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::bernoulli_distribution change(p_change);
    std::normal_distribution<float> d(0.0f, 1e-3f);
    std::vector<float> out = w;
    for (auto& x : out)
        if (change(rng)) x += d(rng) * 0.02f;
    return out;
}

inline std::uint16_t to_bf16(float f) {
    return static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(f) >> 16);
}

inline std::vector<std::byte> random_bytes(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> v(n);
    for (auto& b : v) b = static_cast<std::byte>(rng());
    return v;
}

} // namespace tpde::test

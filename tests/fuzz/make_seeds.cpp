// Writes valid fuzz inputs (real frames and payloads) as a seed corpus, so the fuzzer
// starts from deep inside the decoders instead of at their first check.
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include "../../src/codec/patch.hpp"
#include "../../src/codec/residual.hpp"
#include "../../src/codec/standalone.hpp"
#include "fuzz_input.hpp"
#include "tpde/codec/codec.hpp"

using namespace tpde;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    int n = 0;
    auto write = [&](std::uint8_t target, codec::element_type t, std::size_t size,
                     std::uint8_t seed, const std::vector<std::byte>& body) {
        std::ofstream f(std::string(argv[1]) + "/seed" + std::to_string(n++), std::ios::binary);
        const std::uint8_t h[5] = {target, static_cast<std::uint8_t>(t),
                                   static_cast<std::uint8_t>(size),
                                   static_cast<std::uint8_t>(size >> 8), seed};
        f.write(reinterpret_cast<const char*>(h), 5);
        f.write(reinterpret_cast<const char*>(body.data()),
                static_cast<std::streamsize>(body.size()));
    };
    std::mt19937 rng(1);
    for (auto t : {codec::element_type::bytes, codec::element_type::f16, codec::element_type::bf16,
                   codec::element_type::f32, codec::element_type::f64}) {
        for (std::size_t size : {0u, 7u, 64u, 1000u, 4099u, 16384u}) {
            std::uint8_t seed = static_cast<std::uint8_t>(rng());
            auto ref = fuzz::make_reference(size, seed);
            auto block = ref;
            for (std::size_t i = 0; i < size; i += 1 + rng() % 5) block[i] ^= std::byte{1};
            auto frame = codec::encode(block, ref, {.type = t});
            write(0, t, size, seed, frame);
            for (bool sparse : {false, true}) {
                for (unsigned lanes : {2u, 16u}) {
                    std::vector<std::byte> payload;
                    auto r =
                        codec::detail::encode_delta(t, block, ref, !sparse, sparse, payload, lanes);
                    write(static_cast<std::uint8_t>((sparse ? 2 : 1) | (r.lanes == 16 ? 0x80 : 0)),
                          t, size, seed, payload);
                }
            }
            std::vector<std::byte> payload;
            codec::detail::encode_standalone(t, block, 1, payload);
            write(3, t, size, seed, payload);
            payload.clear();
            codec::detail::encode_patch(block, ref, 3, payload);
            write(4, t, size, seed, payload);
        }
    }
    return 0;
}

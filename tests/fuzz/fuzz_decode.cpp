// libFuzzer target: every decoder behind the frame check must reject hostile input cleanly.
#include <cstring>

#include "../../src/codec/patch.hpp"
#include "../../src/codec/residual.hpp"
#include "../../src/codec/standalone.hpp"
#include "fuzz_input.hpp"
#include "tpde/codec/codec.hpp"

using namespace tpde;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < fuzz::input_header) return 0;
    const auto target = (data[0] & 0x7f) % 5;
    const unsigned lanes = (data[0] & 0x80) ? 16 : 2; // rANS states of a dense/sparse payload
    const auto type_raw = data[1];
    const std::size_t out_size = data[2] | (std::size_t{data[3]} << 8);
    auto ref = fuzz::make_reference(out_size, data[4]);
    std::span<const std::byte> body(reinterpret_cast<const std::byte*>(data) + fuzz::input_header,
                                    size - fuzz::input_header);
    try {
        if (target == 0) {
            codec::decode_options o;
            o.verify_frame_check = false;
            o.max_raw_size = 1 << 16;
            (void)codec::decode(body, ref, o);
            return 0;
        }
        if (!codec::is_valid(type_raw)) return 0;
        auto type = static_cast<codec::element_type>(type_raw);
        std::vector<std::byte> out(out_size);
        if (target == 3)
            codec::detail::decode_standalone(type, body, out);
        else if (target == 4)
            codec::detail::decode_patch(body, ref, out);
        else
            codec::detail::decode_delta(target == 1 ? codec::method::dense : codec::method::sparse,
                                        type, body, ref, out, lanes);
    } catch (const codec::decode_error&) {
    }
    return 0;
}

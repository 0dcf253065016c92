// libFuzzer target for the store's version records (chains/<id>/versions/<vid>, small JSON
// files): parse_record must refuse anything damaged with store_error, never another
// exception, a crash or a sanitizer report; a record it accepts must survive a round trip.
#include <cstdlib>
#include <string>

#include "../../src/store/chain.hpp"

using namespace tpde;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        auto r = store::parse_record(text, "fuzz");
        auto again = store::parse_record(store::encode_record(r), "fuzz");
        if (again.chain_id != r.chain_id || again.version != r.version || again.path != r.path ||
            again.size != r.size || again.seq != r.seq)
            std::abort();
    } catch (const store::store_error&) {
    }
    return 0;
}

#include "patch.hpp"

#include "byte_io.hpp"
#include "zstd_context.hpp"

namespace tpde::codec::detail {

void encode_patch(std::span<const std::byte> block, std::span<const std::byte> reference, int level,
                  std::vector<std::byte>& payload) {
    ZSTD_CCtx* c = thread_cctx();
    ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_refPrefix(c, reference.data(), reference.size());
    auto pos = payload.size();
    payload.resize(pos + ZSTD_compressBound(block.size()));
    std::size_t n =
        ZSTD_compress2(c, payload.data() + pos, payload.size() - pos, block.data(), block.size());
    if (ZSTD_isError(n)) n = payload.size() - pos; // counted as no gain: the caller falls back
    payload.resize(pos + n);
    ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters); // drop the prefix for the next user
}

void decode_patch(std::span<const std::byte> payload, std::span<const std::byte> reference,
                  std::span<std::byte> out) {
    ZSTD_DCtx* d = thread_dctx();
    ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
    ZSTD_DCtx_refPrefix(d, reference.data(), reference.size());
    // Capacity is the block size: zstd refuses to write more.
    std::size_t n = ZSTD_decompressDCtx(d, out.data(), out.size(), payload.data(), payload.size());
    ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
    if (ZSTD_isError(n) || n != out.size())
        throw decode_error("corrupt frame: patch does not decompress");
}

} // namespace tpde::codec::detail

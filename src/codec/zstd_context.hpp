#pragma once
// zstd contexts are expensive to create: one per thread, reused by every block.
#include <memory>
#include <zstd.h>

namespace tpde::codec::detail {

struct cctx_deleter {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct dctx_deleter {
    void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

inline ZSTD_CCtx* thread_cctx() {
    thread_local std::unique_ptr<ZSTD_CCtx, cctx_deleter> c(ZSTD_createCCtx());
    return c.get();
}
inline ZSTD_DCtx* thread_dctx() {
    thread_local std::unique_ptr<ZSTD_DCtx, dctx_deleter> d(ZSTD_createDCtx());
    return d.get();
}

} // namespace tpde::codec::detail

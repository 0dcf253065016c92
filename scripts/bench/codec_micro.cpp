// codec_micro: the codec's single-thread compute speed on one real checkpoint pair, in
// process (no process start, no file I/O), next to libzstd on the same bytes.
//
//   codec_micro [--runs N] [--threads T] PREV NEW
//
// NEW is cut into blocks exactly as `tpde encode --ref PREV NEW` cuts it (format-aware
// segments, 128 KiB blocks, each against its matching block of PREV). One run encodes every
// block on this thread, then decodes every frame and compares it with the block; zstd runs
// ZSTD_compress(level 3) and ZSTD_decompress on the whole NEW. Prints MB/s of NEW's bytes,
// medians over --runs (default 5), and the ratio tpde/zstd of each. With --threads T (default
// 1), T threads share tpde's blocks (zstd stays on one): the codec's own scaling, without the
// command-line tool's reading and writing. Use it to iterate on
// the codec; scripts/bench/codec_bench.sh is the end-to-end (CLI) benchmark of the issue.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>
#include <zstd.h>

#include "read_whole_file.hpp"
#include "tpde/codec/codec.hpp"
#include "tpde/format/block_plan.hpp"
#include "tpde/format/segment.hpp"

namespace fs = std::filesystem;
using namespace tpde;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t) {
    return std::chrono::duration<double>(clk::now() - t).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
    int runs = 5;
    unsigned threads = 1;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--runs" && i + 1 < argc) {
            runs = std::max(1, std::atoi(argv[++i]));
        } else if (a == "--threads" && i + 1 < argc) {
            threads = static_cast<unsigned>(std::clamp(std::atoi(argv[++i]), 1, 256));
        } else if (a == "-h" || a == "--help") {
            std::puts("usage: codec_micro [--runs N] [--threads T] PREV NEW");
            return 0;
        } else {
            paths.push_back(a);
        }
    }
    if (paths.size() != 2) {
        std::fputs("usage: codec_micro [--runs N] [--threads T] PREV NEW\n", stderr);
        return 2;
    }
    try {
        const auto prev = bench::read_whole_file(paths[0]);
        const auto next = bench::read_whole_file(paths[1]);
        const auto prev_layout = format::segment_file(prev);
        const auto next_layout = format::segment_file(next);
        const auto plan = format::plan_blocks(next_layout, &prev_layout, prev.size());
        const std::span<const std::byte> nb(next), pb(prev);

        std::vector<double> enc_s, dec_s, zenc_s, zdec_s;
        std::size_t stored = 0;
        std::size_t zstored = 0;
        std::vector<std::vector<std::byte>> frames(plan.size());
        std::vector<std::byte> zbuf(ZSTD_compressBound(next.size()));
        std::vector<std::byte> zout(next.size());
        ZSTD_CCtx* cctx = ZSTD_createCCtx();
        ZSTD_DCtx* dctx = ZSTD_createDCtx();
        // Runs job(i) for every block on `threads` threads taking blocks in turn; one thread
        // is a thread too, so that every count allocates from a thread's own malloc arena
        // (the main one trims and regrows its heap under this churn of frames: 344 MB/s
        // against 620 on a thread of its own, measured on the full pair).
        auto for_each_block = [&](auto&& job) {
            std::atomic<std::size_t> next_block{0};
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; ++t)
                pool.emplace_back([&] {
                    for (std::size_t i; (i = next_block++) < plan.size();) job(i);
                });
            for (auto& th : pool) th.join();
        };
        for (int r = 0; r < runs; ++r) {
            auto t = clk::now();
            for_each_block([&](std::size_t i) {
                const auto& b = plan[i];
                codec::encode_options o;
                o.type = b.type;
                frames[i] = codec::encode(nb.subspan(b.offset, b.size),
                                          pb.subspan(b.ref_offset, b.ref_size), o);
            });
            enc_s.push_back(seconds_since(t));
            stored = 0;
            for (const auto& f : frames) stored += f.size();

            t = clk::now();
            for_each_block([&](std::size_t i) {
                thread_local std::vector<std::byte> out;
                const auto& b = plan[i];
                out.resize(b.size);
                codec::decode_into(frames[i], pb.subspan(b.ref_offset, b.ref_size), out);
            });
            dec_s.push_back(seconds_since(t));
            for (std::size_t i = 0; i < plan.size(); ++i) { // outside the timing
                const auto& b = plan[i];
                auto back = codec::decode(frames[i], pb.subspan(b.ref_offset, b.ref_size));
                if (back.size() != b.size ||
                    std::memcmp(back.data(), nb.data() + b.offset, b.size) != 0)
                    throw std::runtime_error(fmt::format("block {} does not round-trip", i));
            }

            t = clk::now();
            zstored =
                ZSTD_compressCCtx(cctx, zbuf.data(), zbuf.size(), next.data(), next.size(), 3);
            zenc_s.push_back(seconds_since(t));
            if (ZSTD_isError(zstored)) throw std::runtime_error("zstd failed");
            t = clk::now();
            auto n = ZSTD_decompressDCtx(dctx, zout.data(), zout.size(), zbuf.data(), zstored);
            zdec_s.push_back(seconds_since(t));
            if (ZSTD_isError(n) || n != next.size()) throw std::runtime_error("zstd -d failed");
        }
        ZSTD_freeCCtx(cctx);
        ZSTD_freeDCtx(dctx);

        const double mb = static_cast<double>(next.size()) / 1e6;
        fmt::print(
            "{} against {}: {} blocks, {:.1f} MB, medians of {} runs, tpde on {} thread{}\n\n",
            paths[1], paths[0], plan.size(), mb, runs, threads, threads == 1 ? "" : "s");
        fmt::print("| | tpde | zstd -3 (libzstd) | tpde / zstd |\n|---|---:|---:|---:|\n");
        fmt::print("| ratio | {:.3f} | {:.3f} | |\n", double(next.size()) / double(stored),
                   double(next.size()) / double(zstored));
        fmt::print("| encode MB/s | {:.0f} | {:.0f} | {:.2f} |\n", mb / median(enc_s),
                   mb / median(zenc_s), median(zenc_s) / median(enc_s));
        fmt::print("| decode MB/s | {:.0f} | {:.0f} | {:.2f} |\n", mb / median(dec_s),
                   mb / median(zdec_s), median(zdec_s) / median(dec_s));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "codec_micro: %s\n", e.what());
        return 1;
    }
    return 0;
}

// store_bench: the chain store's benchmark targets on a real checkpoint trajectory.
//
//   store_bench [--runs N] [--drop-caches] [--skip-memory] DIR
//
// DIR holds step_*.pt checkpoints (name order = training order), e.g. the `full` variant of
// scripts/bench/gen_trajectories.sh. Prints three tables:
//   1. rotation: the trajectory written through the store as a run with keep-last-3 does it
//      (1 MiB writes, delete the oldest after each save), store bytes at the end against the
//      bytes the three kept files take as a fresh chain (target <= 1.05);
//   2. reading the newest checkpoint from a freshly opened store (cold decoded-block cache;
//      with --drop-caches also the kernel's page cache, before every run of either tool):
//      frames decoded per block, MB/s, next to `zstd -d` of the same file compressed with
//      `zstd -3`, alternating, medians over --runs (target >= 1.5x);
//   3. memory: a child process commits two ~1 GiB versions of one file (the second makes the
//      store re-encode the first against it) with a 64 MiB cache; peak RSS (target < cache +
//      256 MiB).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <malloc.h>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "read_whole_file.hpp"
#include "tpde/store/store.hpp"

namespace fs = std::filesystem;
using namespace tpde;
using clk = std::chrono::steady_clock;

namespace {

void write_through(store::store& s, const std::string& path, std::span<const std::byte> data) {
    s.create(path, 0644, false);
    auto w = s.open_writer(path, true);
    constexpr std::size_t chunk = 1u << 20;
    for (std::size_t off = 0; off < data.size(); off += chunk)
        w->write(off, data.subspan(off, std::min(chunk, data.size() - off)));
    if (!w->commit()) throw std::runtime_error("commit failed: " + path);
}

std::string ckpt(std::size_t i) {
    return fmt::format("checkpoint-{}/model.pt", i);
}

void drop_caches() {
    ::sync();
    if (FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w")) {
        std::fputs("3\n", f);
        std::fclose(f);
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty()
               ? 0
               : (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
}

double seconds_since(clk::time_point t) {
    return std::chrono::duration<double>(clk::now() - t).count();
}

int run(const std::string& cmd) {
    int rc = std::system(cmd.c_str());
    if (rc != 0) throw std::runtime_error("command failed: " + cmd);
    return rc;
}

std::vector<fs::path> checkpoints_in(const fs::path& dir) {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".pt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

constexpr std::size_t memory_cache = 64u << 20;

// The memory measurement, in its own process: commits two ~1 GiB versions of one file.
int memory_child(const std::vector<fs::path>& files, const fs::path& scratch,
                 const store::store_options& opts, std::size_t cache) {
    auto o = opts;
    o.cache.max_bytes = cache;
    auto s = store::store::open(scratch / "mem", o);
    std::uint64_t total = 0;
    auto t0 = clk::now();
    for (int version = 0; version < 2; ++version) {
        s->create("big.pt", 0644, false);
        auto w = s->open_writer("big.pt", true);
        std::uint64_t off = 0;
        // ~1 GiB: consecutive checkpoints back to back; the second version is the
        // first shifted by one checkpoint, so it is a real successor.
        // Input read 1 MiB at a time, so the peak RSS is the store's, not ours.
        std::vector<std::byte> chunk(1u << 20);
        for (std::size_t i = static_cast<std::size_t>(version); off < (1ull << 30); ++i) {
            int f = ::open(files[i % files.size()].c_str(), O_RDONLY);
            if (f < 0) return 4;
            for (;;) {
                auto n = ::read(f, chunk.data(), chunk.size());
                if (n < 0) return 4;
                if (n == 0) break;
                w->write(off, std::span(chunk).first(static_cast<std::size_t>(n)));
                off += static_cast<std::uint64_t>(n);
            }
            ::close(f);
        }
        if (!w->commit()) return 3;
        total += off;
        if (version == 0) {
            // keep version 0 alive under another name so the store re-encodes it
            s->rename("big.pt", "big-prev.pt");
        }
    }
    s->wait_idle();
    double secs = seconds_since(t0);
    // VmHWM, not getrusage: ru_maxrss survives execve and would count the forked parent.
    long hwm_kb = 0;
    if (FILE* f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, "VmHWM: %ld kB", &hwm_kb) == 1) break;
        std::fclose(f);
    }
    auto line = fmt::format("{} {} {}\n", hwm_kb, total, secs);
    (void)!::write(3, line.data(), line.size());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    // As tpde and tpdefs do: keep freed block buffers in the heap instead of mmap/munmap and
    // fresh zeroed pages per block.
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    if (argc == 4 && std::string(argv[1]) == "--memory-child")
        return memory_child(checkpoints_in(argv[2]), argv[3], {}, memory_cache);
    int runs = 5;
    bool drop = false, skip_memory = false;
    fs::path dir;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--runs" && i + 1 < argc)
            runs = std::atoi(argv[++i]);
        else if (a == "--drop-caches")
            drop = true;
        else if (a == "--skip-memory")
            skip_memory = true;
        else if (a == "-h" || a == "--help") {
            std::puts("usage: store_bench [--runs N] [--drop-caches] [--skip-memory] DIR");
            return 0;
        } else
            dir = a;
    }
    if (dir.empty() || !fs::is_directory(dir)) {
        std::fputs("store_bench: give a directory of step_*.pt checkpoints\n", stderr);
        return 2;
    }
    auto files = checkpoints_in(dir);
    if (files.size() < 4) {
        std::fputs("store_bench: need at least 4 checkpoints\n", stderr);
        return 2;
    }
    auto scratch = fs::temp_directory_path() / fmt::format("store-bench-{}", ::getpid());
    fs::create_directories(scratch);
    store::store_options opts; // defaults, as a mount would use them

    // 1. keep-last-3 rotation
    std::uint64_t logical_kept = 0;
    {
        auto s = store::store::open(scratch / "rot", opts);
        auto t0 = clk::now();
        std::uint64_t written = 0;
        for (std::size_t i = 0; i < files.size(); ++i) {
            auto data = bench::read_whole_file(files[i]);
            s->mkdir(fmt::format("checkpoint-{}", i), 0755);
            write_through(*s, ckpt(i), data);
            written += data.size();
            if (i >= 3) {
                s->unlink(ckpt(i - 3));
                s->rmdir(fmt::format("checkpoint-{}", i - 3));
            }
        }
        s->wait_idle();
        double secs = seconds_since(t0);
        auto rotated = s->stored_bytes();
        for (std::size_t i = files.size() - 3; i < files.size(); ++i)
            logical_kept += fs::file_size(files[i]);
        auto fresh = store::store::open(scratch / "fresh", opts);
        for (std::size_t i = files.size() - 3; i < files.size(); ++i) {
            fresh->mkdir(fmt::format("checkpoint-{}", i), 0755);
            write_through(*fresh, ckpt(i), bench::read_whole_file(files[i]));
        }
        fresh->wait_idle();
        auto fresh_bytes = fresh->stored_bytes();
        fmt::print("\n## keep-last-3 rotation: {} checkpoints of {}\n\n", files.size(),
                   dir.string());
        fmt::print("| store bytes after run | fresh chain of the kept 3 | ratio (target <= 1.05) | "
                   "kept logical / store | "
                   "write+rotate time | MB/s |\n|---|---|---|---|---|---|\n");
        fmt::print("| {} | {} | {:.4f} | {:.3f} | {:.1f} s | {:.0f} |\n", rotated, fresh_bytes,
                   double(rotated) / double(fresh_bytes), double(logical_kept) / double(rotated),
                   secs, written / 1e6 / secs);
        for (std::size_t i = files.size() - 3; i < files.size(); ++i) {
            auto v = s->info(ckpt(i));
            fmt::print("  {}: stored {} ratio {:.3f} depth {} {}\n", ckpt(i), v.stored_bytes,
                       double(v.logical_size) / double(v.stored_bytes), v.depth,
                       v.base.empty() ? "standalone" : "delta against " + v.base_path);
        }
    }

    // 2. read the newest
    {
        auto newest = ckpt(files.size() - 1);
        auto raw = fs::file_size(files.back());
        auto zst = scratch / "newest.zst";
        run(fmt::format("zstd -3 -q -f '{}' -o '{}'", files.back().string(), zst.string()));
        std::vector<double> tpde_s, zstd_s;
        double frames_per_block = 0;
        std::size_t blocks = 0;
        std::vector<std::byte> buf(1u << 20);
        for (int r = 0; r < runs; ++r) {
            if (drop) drop_caches();
            auto ro = opts;
            ro.read_only = true;
            auto s = store::store::open(scratch / "rot", ro);
            auto before = s->counters().frames_decoded;
            auto t0 = clk::now();
            auto rd = s->open_reader(newest);
            for (std::uint64_t off = 0; off < rd->size();) off += rd->read(off, buf);
            tpde_s.push_back(seconds_since(t0));
            auto frames = s->counters().frames_decoded - before;
            blocks = s->info(newest).blocks;
            frames_per_block = double(frames) / double(blocks);
            if (drop) drop_caches();
            t0 = clk::now();
            run(fmt::format("zstd -d -q -c '{}' > /dev/null", zst.string()));
            zstd_s.push_back(seconds_since(t0));
        }
        double t = median(tpde_s), z = median(zstd_s);
        fmt::print("\n## reading the newest checkpoint ({} bytes), median of {} runs{}\n\n", raw,
                   runs, drop ? ", page cache dropped before each" : ", page cache warm");
        fmt::print("| frames decoded / block | tpdefs store MB/s | zstd -d MB/s | ratio (target >= "
                   "1.5) |\n|---|---|---|---|\n");
        fmt::print("| {:.3f} ({} blocks) | {:.0f} | {:.0f} | {:.2f} |\n", frames_per_block, blocks,
                   raw / 1e6 / t, raw / 1e6 / z, z / t);
    }

    // 3. memory of big commits
    if (!skip_memory) {
        constexpr std::size_t cache = memory_cache;
        int pipefd[2];
        if (::pipe(pipefd) != 0) return 1;
        pid_t pid = ::fork();
        if (pid == 0) {
            // A fresh process (not a fork of this one, whose heap would count in its RSS).
            ::dup2(pipefd[1], 3);
            std::string self = fs::read_symlink("/proc/self/exe").string();
            ::execl(self.c_str(), self.c_str(), "--memory-child", dir.c_str(), scratch.c_str(),
                    static_cast<char*>(nullptr));
            _exit(5);
        }
        ::close(pipefd[1]);
        char buf[256] = {};
        auto n = ::read(pipefd[0], buf, sizeof buf - 1);
        int status = 0;
        ::waitpid(pid, &status, 0);
        long rss_kb = 0;
        unsigned long long total = 0;
        double secs = 0;
        if (n > 0) std::sscanf(buf, "%ld %llu %lf", &rss_kb, &total, &secs);
        fmt::print("\n## memory: two commits of {:.2f} GiB each to one chain (the first re-encoded "
                   "against the second), cache {} MiB\n\n",
                   total / 2.0 / (1 << 30), cache >> 20);
        fmt::print(
            "| peak RSS | limit (cache + 256 MiB) | time for both + re-encode |\n|---|---|---|\n");
        fmt::print("| {:.0f} MiB | {} MiB | {:.1f} s |\n", rss_kb / 1024.0, (cache >> 20) + 256,
                   secs);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fmt::print("(child failed: status {})\n", status);
    }
    fs::remove_all(scratch);
    return 0;
}

#include "mount_stats.hpp"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tpde::tools {
namespace {

// One attribute's value; throws std::runtime_error naming the path and the cause.
std::string read_xattr(const std::string& path, const char* name) {
    std::vector<char> buf(4096);
    for (;;) {
        auto n = ::getxattr(path.c_str(), name, buf.data(), buf.size());
        if (n >= 0) return std::string(buf.data(), static_cast<std::size_t>(n));
        if (errno != ERANGE) {
            int err = errno;
            if (err == ENODATA || err == ENOTSUP)
                throw std::runtime_error(path + " is not the root of a tpdefs mount (no " + name +
                                         " attribute)");
            throw std::runtime_error(path + ": reading " + name + ": " + std::strerror(err));
        }
        auto size = ::getxattr(path.c_str(), name, nullptr, 0);
        buf.resize(size > 0 ? static_cast<std::size_t>(size) + 1 : buf.size() * 2);
    }
}

nlohmann::json read_stats(const std::string& mnt) {
    auto text = read_xattr(mnt, "user.tpde.stats");
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error(mnt + ": user.tpde.stats is not JSON: " + e.what());
    }
}

std::uint64_t pending_of(const std::string& mnt) {
    try {
        return std::stoull(read_xattr(mnt, "user.tpde.maintenance_pending"));
    } catch (const std::invalid_argument&) {
        return read_stats(mnt).value("maintenance_pending", std::uint64_t{0});
    }
}

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) {
        b /= 1024;
        ++u;
    }
    return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

std::uint64_t num(const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_number() ? j[key].get<std::uint64_t>() : 0;
}

void print_text(const std::string& mnt, const nlohmann::json& j) {
    const auto& c = j.contains("cache") ? j["cache"] : nlohmann::json::object();
    auto logical = num(j, "logical_bytes"), stored = num(j, "stored_bytes");
    auto hits = num(c, "hits"), misses = num(c, "misses");
    fmt::print("tpdefs mount {} (store {})\n", mnt, j.value("store", std::string("?")));
    fmt::print("  files:          {} files, {}\n", num(j, "files"), human_bytes(double(logical)));
    fmt::print("  stored:         {}, ratio {}\n", human_bytes(double(stored)),
               stored ? fmt::format("{:.2f}", double(logical) / double(stored)) : "-");
    fmt::print("  since mounted:  {} written, {} read; {} commits of {}\n",
               human_bytes(double(num(j, "bytes_written_to_mount"))),
               human_bytes(double(num(j, "bytes_read_from_mount"))), num(j, "commits"),
               human_bytes(double(num(j, "bytes_committed"))));
    fmt::print("  store writes:   {} (objects, with re-encodings), {} re-encodings\n",
               human_bytes(double(num(j, "object_bytes_written"))), num(j, "reencodes"));
    fmt::print("  freed:          {} versions, {}\n", num(j, "versions_freed"),
               human_bytes(double(num(j, "bytes_freed"))));
    fmt::print(
        "  background:     {} task(s) pending, {} compression(s) waiting for writes to stop\n",
        num(j, "maintenance_pending"), num(j, "compressions_waiting_for_idle"));
    const auto committed = num(j, "bytes_committed");
    fmt::print("  write amplification: {} store bytes written per byte committed\n",
               committed ? fmt::format("{:.2f}",
                                       double(num(j, "object_bytes_written")) / double(committed))
                         : std::string("-"));
    fmt::print("  cache:          {} hit rate ({} hits, {} misses), {} of {}\n",
               hits + misses ? fmt::format("{:.1f}%", 100.0 * double(hits) / double(hits + misses))
                             : "-",
               hits, misses, human_bytes(double(num(c, "bytes"))),
               human_bytes(double(num(c, "max_bytes"))));
    double decode_s = c.contains("decode_seconds") ? c["decode_seconds"].get<double>() : 0.0;
    fmt::print("  decoding:       {} blocks decoded in {:.3f} s, {} frames\n", num(c, "decodes"),
               decode_s, num(j, "frames_decoded"));
}

std::string label_value(const std::string& v) {
    std::string out;
    for (char ch : v) {
        if (ch == '\\' || ch == '"')
            out += std::string("\\") + ch;
        else if (ch == '\n')
            out += "\\n";
        else
            out += ch;
    }
    return out;
}

// The Prometheus text exposition format (version 0.0.4), for node_exporter's textfile
// collector: counters since the mount started end in _total; sizes in bytes, times in seconds.
void print_prometheus(const std::string& mnt, const nlohmann::json& j) {
    const auto& c = j.contains("cache") ? j["cache"] : nlohmann::json::object();
    const std::string labels = "{mountpoint=\"" + label_value(mnt) + "\"}";
    auto metric = [&](const char* name, const char* type, const char* help, double value) {
        fmt::print("# HELP tpdefs_{} {}\n# TYPE tpdefs_{} {}\ntpdefs_{}{} {}\n", name, help, name,
                   type, name, labels, value);
    };
    auto n = [](std::uint64_t v) { return double(v); };
    metric("files", "gauge", "Regular files in the mount.", n(num(j, "files")));
    metric("logical_bytes", "gauge", "Logical size of the files in the mount, bytes.",
           n(num(j, "logical_bytes")));
    metric("stored_bytes", "gauge", "Bytes the store's objects take on the backing store.",
           n(num(j, "stored_bytes")));
    metric("written_bytes_total", "counter", "Bytes programs wrote to the mount.",
           n(num(j, "bytes_written_to_mount")));
    metric("read_bytes_total", "counter", "Bytes programs read from the mount.",
           n(num(j, "bytes_read_from_mount")));
    metric("commits_total", "counter", "File versions committed (close or fsync).",
           n(num(j, "commits")));
    metric("committed_bytes_total", "counter", "Logical bytes of the committed versions.",
           n(num(j, "bytes_committed")));
    metric("object_written_bytes_total", "counter",
           "Bytes written to the backing store, re-encodings included.",
           n(num(j, "object_bytes_written")));
    metric("reencodes_total", "counter", "Background re-encodings (compression, deltas).",
           n(num(j, "reencodes")));
    metric("versions_freed_total", "counter", "Versions freed (deleted or replaced files).",
           n(num(j, "versions_freed")));
    metric("freed_bytes_total", "counter", "Bytes freed on the backing store.",
           n(num(j, "bytes_freed")));
    metric("frames_decoded_total", "counter", "Codec frames decoded to serve reads.",
           n(num(j, "frames_decoded")));
    metric("maintenance_pending", "gauge", "Background tasks queued or running.",
           n(num(j, "maintenance_pending")));
    metric("compressions_waiting", "gauge",
           "Newest versions whose raw blocks wait for writes to stop to be compressed.",
           n(num(j, "compressions_waiting_for_idle")));
    metric("cache_hits_total", "counter", "Decoded-block cache hits.", n(num(c, "hits")));
    metric("cache_misses_total", "counter", "Decoded-block cache misses.", n(num(c, "misses")));
    metric("cache_decodes_total", "counter", "Blocks decoded into the cache.",
           n(num(c, "decodes")));
    metric("cache_decode_seconds_total", "counter", "Time spent decoding blocks, seconds.",
           c.contains("decode_seconds") ? c["decode_seconds"].get<double>() : 0.0);
    metric("cache_bytes", "gauge", "Bytes of decoded blocks in the cache.", n(num(c, "bytes")));
    metric("cache_max_bytes", "gauge", "Configured cache size, bytes.", n(num(c, "max_bytes")));
}

void wait_idle(const std::string& mnt) {
    while (pending_of(mnt) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

} // namespace

bool is_tpdefs_mount(const std::string& path) {
    return ::getxattr(path.c_str(), "user.tpde.stats", nullptr, 0) >= 0;
}

void exit_after(double seconds, const std::string& what) {
    if (seconds <= 0) return;
    // A watchdog, not a timed wait: a daemon that stopped answering leaves the calls to the
    // mount blocked in the kernel, and only an exit ends them.
    std::thread([seconds, what] {
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
        std::fprintf(stderr, "tpde stats: %s: gave up after %g s (--timeout)\n", what.c_str(),
                     seconds);
        std::fflush(nullptr);
        ::_exit(1);
    }).detach();
}

int run_mount_stats(const mount_stats_args& a) {
    if (a.wait_idle) wait_idle(a.mountpoint);
    auto j = read_stats(a.mountpoint);
    switch (a.output) {
    case mount_stats_args::format::json:
        fmt::print("{}\n", j.dump(2));
        break;
    case mount_stats_args::format::prometheus:
        print_prometheus(a.mountpoint, j);
        break;
    default:
        print_text(a.mountpoint, j);
    }
    return 0;
}

} // namespace tpde::tools

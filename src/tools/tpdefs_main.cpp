// `tpdefs STORE MOUNTPOINT`: mounts a chain store as a directory that any program can use
// for its checkpoints. A thin driver: options, daemon start-up, the FUSE session.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <fstream>
#include <malloc.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "fs/filesystem.hpp"
#include "fs/fuse_ops.hpp"
#include "tpde/store/store.hpp"

namespace fsys = std::filesystem;
using namespace tpde;

namespace {

struct daemon_options {
    std::string store, mountpoint;
    bool foreground{false};
    bool debug{false};
    bool allow_other{false};
    bool read_only{false};
    std::size_t cache_mib{512};
    std::uint32_t block_kib{128};
    unsigned encode_threads{std::max(1u, std::thread::hardware_concurrency())};
    unsigned max_read_depth{8};
    unsigned fuse_threads{8};
    unsigned read_ahead_kib{4096};
    std::string log_file;
    std::vector<std::string> mount_options;
};

// -o items: the ones FUSE or we understand; anything else is an error, not ignored.
void apply_mount_options(daemon_options& o) {
    for (auto& item : o.mount_options) {
        if (item.empty() || item == "rw" || item == "defaults" || item == "nodev" ||
            item == "nosuid" || item == "noatime")
            continue;
        auto eq = item.find('=');
        auto key = item.substr(0, eq);
        auto value = eq == std::string::npos ? "" : item.substr(eq + 1);
        auto number = [&](auto& out, unsigned long lo, unsigned long hi) {
            try {
                auto v = std::stoul(value);
                if (v < lo || v > hi) throw std::out_of_range("");
                out = static_cast<std::remove_reference_t<decltype(out)>>(v);
            } catch (const std::exception&) {
                throw CLI::ValidationError("-o " + key,
                                           fmt::format("needs a number in [{}, {}]", lo, hi));
            }
        };
        if (item == "allow_other")
            o.allow_other = true;
        else if (item == "ro")
            o.read_only = true;
        else if (key == "cache_mib")
            number(o.cache_mib, 1, 1ul << 20);
        else if (key == "block_kib")
            number(o.block_kib, 4, 4096);
        else if (key == "encode_threads")
            number(o.encode_threads, 1, 256);
        else if (key == "max_read_depth")
            number(o.max_read_depth, 1, 64);
        else if (key == "read_ahead_kib")
            number(o.read_ahead_kib, 0, 65536);
        else
            throw CLI::ValidationError("-o",
                                       "unknown mount option '" + item + "' (see tpdefs --help)");
    }
}

void setup_logging(const daemon_options& o, bool daemonized) {
    std::shared_ptr<spdlog::logger> log;
    if (!o.log_file.empty())
        log = spdlog::basic_logger_mt("tpdefs", o.log_file);
    else if (daemonized)
        log = spdlog::syslog_logger_mt("tpdefs", "tpdefs", LOG_PID);
    else
        log = spdlog::stderr_color_mt("tpdefs");
    spdlog::set_default_logger(log);
    spdlog::set_level(o.debug ? spdlog::level::debug : spdlog::level::info);
    if (const char* level = std::getenv("TPDE_LOG"))
        spdlog::set_level(spdlog::level::from_str(level));
    spdlog::flush_on(spdlog::level::info);
}

// The kernel reads a FUSE file in requests as large as its read-ahead window, 128 KiB by
// default; each request is a round trip to the daemon. Measured here: 135 MB/s cold at 128
// KiB, 941 MB/s at 4 MiB. Needs root (sysfs); without it the default stays.
// The mount's device comes from /proc/self/mountinfo: a stat of the mountpoint would be a
// request to this daemon, which is not serving yet.
void set_read_ahead(const std::string& mountpoint, unsigned kib) {
    if (kib == 0) return;
    std::string dev;
    std::ifstream info("/proc/self/mountinfo");
    for (std::string line; std::getline(info, line);) {
        std::istringstream in(line);
        std::string id, parent, majmin, root, point;
        if ((in >> id >> parent >> majmin >> root >> point) && point == mountpoint) dev = majmin;
    }
    if (dev.empty()) {
        spdlog::info("read-ahead left at the kernel default: {} not in /proc/self/mountinfo",
                     mountpoint);
        return;
    }
    auto path = fmt::format("/sys/class/bdi/{}/read_ahead_kb", dev);
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f || std::fprintf(f, "%u\n", kib) < 0 || std::fclose(f) != 0) {
        spdlog::info("read-ahead left at the kernel default: cannot write {}", path);
        return;
    }
    spdlog::debug("read-ahead {} KiB ({})", kib, path);
}

// Mounts and serves until unmounted or signalled. `ready(error)` is called once: with ""
// when the mount is up, else with the reason it failed.
int serve(const daemon_options& o, const std::function<void(const std::string&)>& ready) {
    std::unique_ptr<store::store> s;
    try {
        store::store_options so;
        so.cache_bytes = o.cache_mib << 20;
        so.block_size = o.block_kib << 10;
        so.encode_threads = o.encode_threads;
        so.max_read_depth = o.max_read_depth;
        so.background_maintenance = true;
        so.read_only = o.read_only;
        store::recovery_report rep;
        s = store::store::open(o.store, so, &rep);
        for (auto& r : rep.removed) spdlog::info("recovery: removed {}", r);
    } catch (const std::exception& e) {
        ready(e.what());
        return 1;
    }
    fs::filesystem filesystem(*s);
    // Resolved now: once mounted, resolving it would ask this daemon, which is not serving yet.
    const auto mountpoint = fsys::canonical(o.mountpoint).string();

    std::vector<std::string> args = {"tpdefs", "-o",
                                     "fsname=tpdefs:" + fsys::absolute(o.store).string() +
                                         ",subtype=tpdefs,default_permissions" +
                                         (o.allow_other ? ",allow_other" : "") +
                                         (o.read_only ? ",ro" : "")};
    if (o.debug) args.push_back("-d");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    auto* se = fuse_session_new(&fargs, &fs::operations(), sizeof(fuse_lowlevel_ops), &filesystem);
    if (!se) {
        ready("cannot create the FUSE session (see the messages above)");
        return 1;
    }
    if (fuse_set_signal_handlers(se) != 0) {
        fuse_session_destroy(se);
        ready("cannot install signal handlers");
        return 1;
    }
    if (fuse_session_mount(se, o.mountpoint.c_str()) != 0) {
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
        ready("cannot mount on " + o.mountpoint +
              " (is /dev/fuse there, and fusermount3 installed?)");
        return 1;
    }
    set_read_ahead(mountpoint, o.read_ahead_kib);
    spdlog::info("mounted {} on {}", o.store, o.mountpoint);
    ready("");
    auto* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, o.fuse_threads);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    // Unmounted or signalled: files still open for writing are committed before we go.
    filesystem.shutdown();
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    s.reset(); // finishes queued re-encodings
    spdlog::info("unmounted {}", o.mountpoint);
    return rc < 0 ? 1 : 0; // a positive rc is the signal that ended the loop: a clean stop
}

// Runs serve() in a child that detaches; the parent exits only when the mount is up (0) or
// failed (1, with the reason on stderr), so `tpdefs S M && ls M` works.
int daemonize_and_serve(daemon_options o) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
    pid_t pid = ::fork();
    if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid > 0) {
        ::close(pipefd[1]);
        std::string msg;
        char buf[512];
        ssize_t n;
        while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0)
            msg.append(buf, static_cast<std::size_t>(n));
        if (msg == "ok") return 0;
        int status = 0;
        ::waitpid(pid, &status, 0);
        std::fprintf(stderr, "tpdefs: %s\n",
                     msg.empty() ? "the daemon exited during start-up" : msg.c_str());
        return 1;
    }
    ::close(pipefd[0]);
    ::setsid();
    o.store = fsys::absolute(o.store).string();
    o.mountpoint = fsys::absolute(o.mountpoint).string();
    if (::chdir("/") != 0) _exit(1);
    setup_logging(o, true);
    int rc = serve(o, [&](const std::string& error) {
        auto msg = error.empty() ? std::string("ok") : error;
        (void)!::write(pipefd[1], msg.data(), msg.size());
        ::close(pipefd[1]);
        if (error.empty()) {
            int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) {
                ::dup2(null, 0);
                ::dup2(null, 1);
                ::dup2(null, 2);
                if (null > 2) ::close(null);
            }
        }
    });
    _exit(rc);
}

} // namespace

int main(int argc, char** argv) {
    // Decoded blocks are ~128 KiB: reuse freed ones from the heap instead of mapping fresh
    // zeroed pages for each (measured: that cost more than decoding).
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);

    daemon_options o;
    CLI::App app{
        "tpdefs: mount a tpdefs store at MOUNTPOINT. Files written there are stored losslessly as\n"
        "TPDE deltas against the previous checkpoint of their chain; reads give back the exact\n"
        "bytes. Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM/SIGINT to the daemon)."};
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("tpdefs: ") + e.what() + "\n";
    });
    app.add_option("STORE", o.store, "store directory (created when missing or empty)")->required();
    app.add_option("MOUNTPOINT", o.mountpoint, "existing directory to mount on")
        ->required()
        ->check(CLI::ExistingDirectory);
    app.add_flag("-f,--foreground", o.foreground, "stay in the foreground (logs to stderr)");
    app.add_flag("-d,--debug", o.debug, "foreground, debug log and every FUSE request");
    app.add_option(
           "-o", o.mount_options,
           "mount options, comma-separated: allow_other, ro, cache_mib=N, block_kib=N, "
           "encode_threads=N, max_read_depth=N, read_ahead_kib=N (also rw, noatime, nodev, nosuid)")
        ->delimiter(',');
    app.add_option("--cache-mib", o.cache_mib, "decoded-block cache size, MiB")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->capture_default_str();
    app.add_option("--block-kib", o.block_kib, "largest encoded block, KiB")
        ->check(CLI::Range(4u, 4096u))
        ->capture_default_str();
    app.add_option("--encode-threads", o.encode_threads, "encode/decode worker threads")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    app.add_option("--max-read-depth", o.max_read_depth,
                   "retention: frames decoded per block to read any version, at most (a chain "
                   "keeps a standalone version every N)")
        ->check(CLI::Range(1u, 64u))
        ->capture_default_str();
    app.add_option("--fuse-threads", o.fuse_threads, "FUSE request threads, at most")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    app.add_option("--read-ahead-kib", o.read_ahead_kib,
                   "kernel read-ahead for the mount, KiB (0: leave the default); larger means "
                   "fewer, larger read requests")
        ->check(CLI::Range(0u, 65536u))
        ->capture_default_str();
    app.add_flag(
        "--allow-other", o.allow_other,
        "let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root)");
    app.add_flag("--read-only", o.read_only, "mount read-only");
    app.add_option("--log-file", o.log_file,
                   "log here (default: stderr in the foreground, syslog as a daemon)");
    try {
        app.parse(argc, argv);
        apply_mount_options(o);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (o.debug) o.foreground = true;
    try {
        if (o.foreground) {
            setup_logging(o, false);
            return serve(o, [](const std::string& error) {
                if (!error.empty()) spdlog::error("{}", error);
            });
        }
        return daemonize_and_serve(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tpdefs: %s\n", e.what());
        return 1;
    }
}

// `tpdefs STORE MOUNTPOINT`: mounts a chain store as a directory that any program can use
// for its checkpoints. A thin driver: options, logging, start-up as a daemon; the mount
// itself is tpde::fs::serve.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <malloc.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_options.hpp"
#include "tpde/fs/mount.hpp"
#include "tpde/store/store.hpp"

namespace fsys = std::filesystem;
using namespace tpde;

namespace {

void setup_logging(const tools::daemon_options& o, bool daemonized) {
    std::shared_ptr<spdlog::logger> log;
    if (!o.log_file.empty())
        log = spdlog::basic_logger_mt("tpdefs", o.log_file);
    else if (daemonized)
        log = spdlog::syslog_logger_mt("tpdefs", "tpdefs", LOG_PID);
    else
        log = spdlog::stderr_color_mt("tpdefs");
    spdlog::set_default_logger(log);
    spdlog::set_level(o.mount.debug ? spdlog::level::debug : spdlog::level::info);
    if (const char* level = std::getenv("TPDE_LOG"))
        spdlog::set_level(spdlog::level::from_str(level));
    spdlog::flush_on(spdlog::level::info);
}

// Opens the store, mounts and serves until unmounted or signalled. `ready(error)` is called
// once: with "" when the mount is up, else with the reason it failed.
int open_and_serve(const tools::daemon_options& o,
                   const std::function<void(const std::string&)>& ready) {
    std::unique_ptr<store::store> s;
    try {
        store::recovery_report rep;
        s = store::store::open(o.store_dir, o.store, &rep);
        for (auto& r : rep.removed) spdlog::info("recovery: removed {}", r);
    } catch (const std::exception& e) {
        ready(e.what());
        return 1;
    }
    int rc = fs::serve(*s, o.mount, ready);
    s.reset(); // finishes queued re-encodings
    if (rc == 0) spdlog::info("unmounted {}", o.mount.mountpoint);
    return rc;
}

// Runs the daemon in a child that detaches; the parent exits only when the mount is up (0)
// or failed (1, with the reason on stderr), so `tpdefs S M && ls M` works.
int daemonize_and_serve(tools::daemon_options o) {
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
    o.store_dir = fsys::absolute(o.store_dir).string();
    o.mount.mountpoint = fsys::absolute(o.mount.mountpoint).string();
    if (::chdir("/") != 0) _exit(1);
    setup_logging(o, true);
    int rc = open_and_serve(o, [&](const std::string& error) {
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

    tools::daemon_options o;
    CLI::App app{
        "tpdefs: mount a tpdefs store at MOUNTPOINT. Files written there are stored losslessly as\n"
        "TPDE deltas against the previous checkpoint of their chain; reads give back the exact\n"
        "bytes. Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM/SIGINT to the daemon)."};
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("tpdefs: ") + e.what() + "\n";
    });
    tools::daemon_option_table table(app, o);
    try {
        app.parse(argc, argv);
        table.apply_mount_options();
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (o.mount.debug) o.foreground = true;
    try {
        if (o.foreground) {
            setup_logging(o, false);
            return open_and_serve(o, [](const std::string& error) {
                if (!error.empty()) spdlog::error("{}", error);
            });
        }
        return daemonize_and_serve(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tpdefs: %s\n", e.what());
        return 1;
    }
}

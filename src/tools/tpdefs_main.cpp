// `tpdefs STORE MOUNTPOINT`: mounts a chain store as a directory that any program can use
// for its checkpoints. A thin driver: options, logging, start-up as a daemon; the mount
// itself is tpde::fs::serve.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <malloc.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_options.hpp"
#include "exit_status.hpp"
#include "mount_checks.hpp"
#include "sd_notify.hpp"
#include "tpde/fs/mount.hpp"
#include "tpde/store/store.hpp"

namespace fsys = std::filesystem;
using namespace tpde;

namespace {

// Whether stderr is systemd's journal (it then adds time stamps of its own).
bool stderr_is_journal() {
    const char* js = std::getenv("JOURNAL_STREAM");
    unsigned long long dev = 0, ino = 0;
    struct stat st {};
    return js && std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && ::fstat(2, &st) == 0 &&
           st.st_dev == dev && st.st_ino == ino;
}

void setup_logging(const tools::daemon_options& o, bool daemonized) {
    std::shared_ptr<spdlog::logger> log;
    if (!o.log_file.empty()) {
        log = spdlog::basic_logger_mt("tpdefs", o.log_file);
    } else if (daemonized) {
        log = spdlog::syslog_logger_mt("tpdefs", "tpdefs", LOG_PID);
    } else {
        log = spdlog::stderr_color_mt("tpdefs");
        if (stderr_is_journal()) log->set_pattern("[%l] %v");
    }
    spdlog::set_default_logger(log);
    auto level = o.mount.debug ? spdlog::level::debug : spdlog::level::info;
    if (const char* env = std::getenv("TPDE_LOG")) level = spdlog::level::from_str(env);
    if (!o.log_level.empty()) level = spdlog::level::from_str(o.log_level);
    spdlog::set_level(level);
    spdlog::flush_on(spdlog::level::info);
}

// Opens the store, mounts and serves until unmounted or signalled. `ready(error)` is called
// once: with "" when the mount answers, else with the reason it failed. Tells systemd
// (READY=1) when the mount answers and STOPPING=1 once it is unmounted; a store this run
// created is removed again if the mount never came up.
int open_and_serve(tools::daemon_options o, const std::function<void(const std::string&)>& ready) {
    if (o.mount.allow_other && ::geteuid() != 0 && !tools::fuse_conf_allows_other()) {
        spdlog::warn("allow_other ignored: a user may set it only with a line user_allow_other "
                     "in /etc/fuse.conf; this mount is for uid {} (and root) alone",
                     ::geteuid());
        o.mount.allow_other = false;
    }
    tools::new_store_cleanup cleanup(o.store_dir);
    std::unique_ptr<store::store> s;
    try {
        store::recovery_report rep;
        s = store::store::open(o.store_dir, o.store, &rep);
        for (auto& r : rep.removed) spdlog::info("recovery: removed {}", r);
    } catch (const std::exception& e) {
        cleanup.remove_created();
        ready(e.what());
        return 1;
    }
    std::atomic<bool> served{false};
    int rc = fs::serve(*s, o.mount, [&](const std::string& error) {
        if (error.empty()) {
            served = true;
            tools::notify_systemd(fmt::format("READY=1\nSTATUS=serving {} on {}\nMAINPID={}",
                                              o.store_dir, o.mount.mountpoint, ::getpid()));
        }
        ready(error);
    });
    if (served) {
        tools::notify_systemd("STOPPING=1\nSTATUS=unmounted; finishing background compression");
        spdlog::info("unmounted {}; finishing background work", o.mount.mountpoint);
    }
    s.reset(); // finishes queued re-encodings
    if (!served) {
        cleanup.remove_created();
        return rc == 0 ? 1 : rc;
    }
    if (rc == 0) spdlog::info("stopped: store {} closed", o.store_dir);
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
    if (!o.log_file.empty()) o.log_file = fsys::absolute(o.log_file).string();
    if (::chdir("/") != 0) _exit(1);
    try {
        setup_logging(o, true);
    } catch (const std::exception& e) {
        std::string msg = std::string("cannot log: ") + e.what();
        (void)!::write(pipefd[1], msg.data(), msg.size());
        _exit(1);
    }
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
        "bytes. Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM/SIGINT to the daemon).\n"
        "Exit status: 0 mounted (with -f: unmounted cleanly), 1 failed, 2 usage error."};
    app.set_version_flag("--version", "tpdefs " TPDE_VERSION, "print the version and exit");
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("tpdefs: ") + e.what() + "\n";
    });
    tools::daemon_option_table table(app, o);
    try {
        app.parse(argc, argv);
        table.apply_mount_options();
    } catch (const CLI::ParseError& e) {
        return tools::usage_exit(app, e);
    }
    if (o.mount.debug) o.foreground = true;
    try {
        o.mount.mountpoint = tools::check_mountpoint(o.mount.mountpoint, o.nonempty);
        if (o.foreground) {
            setup_logging(o, false);
            return open_and_serve(o, [](const std::string& error) {
                if (!error.empty()) spdlog::error("{}", error);
            });
        }
        return daemonize_and_serve(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tpdefs: %s\n", e.what());
        return tools::exit_failure;
    }
}

#include "tpde/fs/mount.hpp"

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <fstream>
#include <mutex>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>

#include "filesystem.hpp"
#include "fuse_ops.hpp"

namespace tpde::fs {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& field) {
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        auto digit = [&](std::size_t k) {
            return k < field.size() && std::isdigit(static_cast<unsigned char>(field[k]));
        };
        if (field[i] == '\\' && digit(i + 1) && digit(i + 2) && digit(i + 3)) {
            out.push_back(static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8)));
            i += 3;
        } else {
            out.push_back(field[i]);
        }
    }
    return out;
}

// The kernel reads a FUSE file in requests as large as its read-ahead window, 128 KiB by
// default; each request is a round trip to the daemon. Measured here: 135 MB/s cold at 128
// KiB, 941 MB/s at 4 MiB. Needs root (sysfs); without it the default stays, said in one line.
// The mount's device comes from /proc/self/mountinfo: a stat of the mountpoint would be a
// request to this daemon, which is not serving yet.
void set_read_ahead(const std::string& mountpoint, unsigned kib) {
    if (kib == 0) return;
    auto m = mount_at(mountpoint);
    if (!m) {
        spdlog::info("read-ahead left at the kernel default: {} not in /proc/self/mountinfo",
                     mountpoint);
        return;
    }
    auto path = fmt::format("/sys/class/bdi/{}/read_ahead_kb", m->device);
    FILE* f = std::fopen(path.c_str(), "w");
    int err = f ? 0 : errno;
    if (f && (std::fprintf(f, "%u\n", kib) < 0 || std::fclose(f) != 0)) err = errno ? errno : EIO;
    if (err) {
        spdlog::info("read-ahead left at the kernel default (128 KiB): cannot write {}: {}{}", path,
                     std::strerror(err), ::geteuid() != 0 ? " (needs root)" : "");
        return;
    }
    spdlog::debug("read-ahead {} KiB ({})", kib, path);
}

bool setuid_root(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && st.st_uid == 0 && (st.st_mode & S_ISUID);
}

// Why fuse_session_mount failed, as far as we can tell (libfuse printed its own line too).
std::string mount_failure(const std::string& mountpoint) {
    const std::string head = "cannot mount on " + mountpoint + ": ";
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENODEV || err == ENXIO)
            return head + "/dev/fuse is missing (" + std::strerror(err) +
                   "): the fuse kernel module is not loaded (modprobe fuse) or /dev has no "
                   "fuse device node (in a container: pass --device /dev/fuse)";
        if (err == EACCES || err == EPERM) {
            struct stat st {};
            ::stat("/dev/fuse", &st);
            return head +
                   fmt::format("permission denied opening /dev/fuse (mode {:04o}, owner uid {} "
                               "gid {}; this process runs as uid {}): a user needs it "
                               "readable and writable by all, mode 0666 as Debian's udev "
                               "rules make it (chmod 0666 /dev/fuse), or mount as root",
                               st.st_mode & 07777, st.st_uid, st.st_gid, ::geteuid());
        }
        return head + "cannot open /dev/fuse: " + std::strerror(err);
    }
    ::close(fd);
    if (::geteuid() != 0) {
        // A user mounts through the setuid helper fusermount3, found in PATH or libfuse's
        // own install directory.
        std::string found;
        std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
        for (std::size_t pos = 0; found.empty() && pos <= path.size();) {
            auto end = path.find(':', pos);
            if (end == std::string::npos) end = path.size();
            auto cand = path.substr(pos, end - pos) + "/fusermount3";
            if (::access(cand.c_str(), X_OK) == 0) found = cand;
            pos = end + 1;
        }
        if (found.empty() && ::access("/usr/bin/fusermount3", X_OK) == 0)
            found = "/usr/bin/fusermount3";
        if (found.empty())
            return head + "fusermount3 is not installed (Debian package fuse3); a user "
                          "mounts through it";
        if (!setuid_root(found))
            return head + found + " is not setuid root (chmod u+s " + found +
                   "); a user mounts through it";
        return head + "fusermount3 refused (its message is above: the mount point must be a "
                      "directory the user owns or may write)";
    }
    return head + "the kernel refused the mount (see the fuse message above)";
}

} // namespace

std::optional<mount_entry> mount_at(const std::string& path) {
    std::optional<mount_entry> found;
    std::ifstream info("/proc/self/mountinfo");
    for (std::string line; std::getline(info, line);) {
        auto sep = line.find(" - ");
        if (sep == std::string::npos) continue;
        std::istringstream left(line.substr(0, sep)), right(line.substr(sep + 3));
        std::string id, parent, majmin, root, point;
        if (!(left >> id >> parent >> majmin >> root >> point)) continue;
        if (unescape_mountinfo(point) != path) continue;
        mount_entry e;
        e.device = majmin;
        right >> e.fstype >> e.source;
        e.source = unescape_mountinfo(e.source);
        found = e; // later lines are mounted on top of earlier ones
    }
    return found;
}

int serve(store::store& s, const mount_options& o,
          const std::function<void(const std::string&)>& ready) {
    filesystem filesystem(s, o.fs);
    // Resolved now: once mounted, resolving it would ask this daemon, which is not serving yet.
    const auto mountpoint = std::filesystem::canonical(o.mountpoint).string();

    std::vector<std::string> args = {
        "tpdefs", "-o",
        "fsname=tpdefs:" + std::filesystem::absolute(s.root()).string() +
            ",subtype=tpdefs,default_permissions" + (o.allow_other ? ",allow_other" : "") +
            (o.read_only ? ",ro" : "") + (o.noexec ? ",noexec" : "")};
    if (o.debug) args.push_back("-d");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    // libfuse copies argv into memory of its own when it edits it: freed on every return.
    struct args_guard {
        fuse_args& a;
        ~args_guard() { fuse_opt_free_args(&a); }
    } free_args{fargs};
    auto* se = fuse_session_new(&fargs, &operations(), sizeof(fuse_lowlevel_ops), &filesystem);
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
        ready(mount_failure(o.mountpoint));
        return 1;
    }
    set_read_ahead(mountpoint, o.read_ahead_kib);
    // Ready once the mount answers: a stat of its root waits for the kernel's INIT and a
    // GETATTR, both served by the loop below, and must come from this mount's device (not
    // from the directory below, if the mount is already gone). If it fails while the loop
    // runs, the daemon stops as on SIGTERM; if the loop ended first, destroying the session
    // aborts the connection, which ends a stat still waiting.
    std::mutex stop_mutex;
    bool loop_done = false;
    std::thread probe([&] {
        struct stat st {};
        std::string error;
        if (::stat(mountpoint.c_str(), &st) != 0) {
            error = std::strerror(errno);
        } else {
            auto m = mount_at(mountpoint);
            unsigned major = 0, minor = 0;
            if (!m || std::sscanf(m->device.c_str(), "%u:%u", &major, &minor) != 2 ||
                st.st_dev != makedev(major, minor))
                error = "it is no longer mounted";
        }
        if (error.empty()) {
            spdlog::info("mounted {} on {}", s.root().string(), o.mountpoint);
            ready("");
            return;
        }
        ready(fmt::format("{} was mounted but does not answer: {}", o.mountpoint, error));
        std::lock_guard lock(stop_mutex);
        if (!loop_done) ::kill(::getpid(), SIGTERM); // caught by libfuse's handler: ends the loop
    });
    auto* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, o.fuse_threads);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    {
        std::lock_guard lock(stop_mutex);
        loop_done = true;
    }
    // Unmounted or signalled: files still open for writing are committed before we go.
    filesystem.shutdown();
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    probe.join();
    return rc < 0 ? 1 : 0; // a positive rc is the signal that ended the loop: a clean stop
}

} // namespace tpde::fs

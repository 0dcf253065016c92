#include "tpde/fs/mount.hpp"

#include <cstdio>
#include <filesystem>
#include <fmt/core.h>
#include <fstream>
#include <spdlog/spdlog.h>
#include <sstream>

#include "filesystem.hpp"
#include "fuse_ops.hpp"

namespace tpde::fs {
namespace {

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

} // namespace

int serve(store::store& s, const mount_options& o,
          const std::function<void(const std::string&)>& ready) {
    filesystem filesystem(s, o.fs);
    // Resolved now: once mounted, resolving it would ask this daemon, which is not serving yet.
    const auto mountpoint = std::filesystem::canonical(o.mountpoint).string();

    std::vector<std::string> args = {
        "tpdefs", "-o",
        "fsname=tpdefs:" + std::filesystem::absolute(s.root()).string() +
            ",subtype=tpdefs,default_permissions" + (o.allow_other ? ",allow_other" : "") +
            (o.read_only ? ",ro" : "")};
    if (o.debug) args.push_back("-d");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
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
        ready("cannot mount on " + o.mountpoint +
              " (is /dev/fuse there, and fusermount3 installed?)");
        return 1;
    }
    set_read_ahead(mountpoint, o.read_ahead_kib);
    spdlog::info("mounted {} on {}", s.root().string(), o.mountpoint);
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
    return rc < 0 ? 1 : 0; // a positive rc is the signal that ended the loop: a clean stop
}

} // namespace tpde::fs

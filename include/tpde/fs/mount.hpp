#pragma once
// Serving a store as a FUSE mount: the core of the tpdefs daemon. The driver (src/tools)
// parses options, opens the store, sets up logging and detaches; this mounts the store and
// runs the FUSE session until it is unmounted or signalled.
#include <functional>
#include <optional>
#include <string>

#include "tpde/store/store.hpp"

namespace tpde::fs {

// How the filesystem answers the kernel (the FUSE logic's own options).
struct fs_options {
    double attr_timeout{1.0};  // seconds the kernel may cache attributes
    double entry_timeout{1.0}; // seconds the kernel may cache names
};

struct mount_options {
    std::string mountpoint;
    bool allow_other{false};
    bool read_only{false};
    bool noexec{false}; // the kernel mount's noexec flag
    bool debug{false};  // libfuse logs every request
    unsigned fuse_threads{8};
    // Kernel read-ahead for the mount; 0 leaves the kernel's default (128 KiB).
    unsigned read_ahead_kib{4096};
    fs_options fs{};
};

// Mounts `s` at o.mountpoint and serves until unmounted or signalled, then commits every
// file still open for writing and waits for queued maintenance. `ready(error)` is called
// once: with "" when the mount answers (a stat of its root returned), else with why it
// failed (for /dev/fuse: missing, or not accessible, and what to do). Returns the exit status.
int serve(store::store& s, const mount_options& o,
          const std::function<void(const std::string&)>& ready);

// The topmost mount at `path` (absolute, symlinks resolved) as /proc/self/mountinfo lists it,
// if any: read from the table, never by a stat of `path` (which a hung FUSE daemon would
// never answer).
struct mount_entry {
    std::string fstype; // "fuse.tpdefs", "ext4", "autofs"...
    std::string source; // "tpdefs:/srv/store"
    std::string device; // "0:53" (major:minor)
};
std::optional<mount_entry> mount_at(const std::string& path);

} // namespace tpde::fs

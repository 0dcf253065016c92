#pragma once
// `tpde stats MOUNTPOINT`: the counters of a running tpdefs mount, read from the virtual
// attributes of its root (user.tpde.stats, user.tpde.maintenance_pending).
#include <string>

namespace tpde::tools {

struct mount_stats_args {
    std::string mountpoint;
    enum class format { text, json, prometheus } output{format::text};
    bool wait_idle{false}; // first wait until no background work is pending
};

// Whether `path` is the root of a tpdefs mount (it has user.tpde.stats).
bool is_tpdefs_mount(const std::string& path);

int run_mount_stats(const mount_stats_args& a);

// Ends the process with status 1 and a message after `seconds` (0: never), whatever it is
// waiting for: even a call to a mount whose daemon stopped answering.
void exit_after(double seconds, const std::string& what);

} // namespace tpde::tools

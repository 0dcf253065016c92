#pragma once
// The options of the tpdefs daemon: the store's and the mount's option structs (their
// defaults are the only defaults), and the one table that declares each option once, as a
// `--long-option` and as the `-o key=value` item of the same name ('-' written '_'), so
// --help, -o and the man page cannot drift apart.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "tpde/fs/mount.hpp"
#include "tpde/store/store.hpp"

namespace tpde::tools {

struct daemon_options {
    std::string store_dir;
    store::store_options store{.background_maintenance = true};
    fs::mount_options mount{};
    bool foreground{false};
    bool nonempty{false};  // mount on a non-empty directory or over an existing mount
    std::string log_file;  // empty: stderr in the foreground, syslog as a daemon
    std::string log_level; // empty: info (debug with -d), or $TPDE_LOG
};

class daemon_option_table {
public:
    // Declares every option on `app`, bound to `o`.
    daemon_option_table(CLI::App& app, daemon_options& o);
    // After app.parse(): applies the -o items through the same option declarations (they
    // override the --long-option form). Throws CLI::ParseError on an unknown or bad item.
    void apply_mount_options();

private:
    CLI::App& app_;
    daemon_options& o_;
    std::vector<std::string> items_; // the -o items, comma-separated on the command line
};

} // namespace tpde::tools

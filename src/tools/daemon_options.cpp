#include "daemon_options.hpp"

#include <algorithm>
#include <set>

namespace tpde::tools {
namespace {

// Items mount(8), mount.fuse3, fstab and systemd pass to every filesystem: accepted and
// ignored. mount(8) adds rw (or ro, which is ours) and passes nofail, _netdev and user (an
// fstab `user` also adds nosuid,nodev,noexec); mount.fuse3 adds dev,suid. A tpdefs mount is
// always nosuid,nodev (libfuse's default); noexec is ours (--noexec). FUSE keeps no atime.
const std::set<std::string> generic_mount_items = {
    "rw",          "defaults",      "auto",     "noauto",     "nofail",   "_netdev",
    "user",        "users",         "nouser",   "owner",      "group",    "dev",
    "nodev",       "suid",          "nosuid",   "exec",       "atime",    "noatime",
    "diratime",    "nodiratime",    "relatime", "norelatime", "lazytime", "nolazytime",
    "strictatime", "nostrictatime", "async",
};
// Prefixes of items meant for other programs (x-systemd.automount, x-mount.mkdir...).
bool for_other_programs(const std::string& item) {
    return item.rfind("x-", 0) == 0 || item.rfind("X-", 0) == 0 || item.rfind("comment=", 0) == 0;
}

// -o spellings that differ from the option's name.
std::string option_for(const std::string& key) {
    if (key == "ro") return "--read-only";
    std::string name = "--" + key;
    std::replace(name.begin(), name.end(), '_', '-');
    return name;
}

} // namespace

daemon_option_table::daemon_option_table(CLI::App& app, daemon_options& o) : app_(app), o_(o) {
    app.add_option("STORE", o.store_dir, "store directory (created when missing or empty)")
        ->required();
    // Checked by the program, not here: a check here would stat it, which hangs if it is the
    // mount point of a daemon that stopped answering.
    app.add_option("MOUNTPOINT", o.mount.mountpoint,
                   "existing empty directory to mount on (not already a mount point)")
        ->required();
    app.add_option("-o", items_,
                   "mount options, comma-separated: every --long-option below as key=value "
                   "with '_' for '-' (cache_mib=256, log_file=PATH), a flag as its name "
                   "(read_only, allow_other), ro for read_only; what mount(8), fstab and "
                   "systemd add (rw, defaults, nofail, _netdev, user, dev, suid, noatime, "
                   "x-*...) is accepted and ignored")
        ->delimiter(',');
    app.add_flag("-f,--foreground", o.foreground, "stay in the foreground (logs to stderr)");
    app.add_flag("-d,--debug", o.mount.debug, "foreground, debug log and every FUSE request");

    // Sizes are given in MiB and KiB; the structs hold bytes.
    const store::store_options store_defaults{};
    app.add_option_function<std::size_t>(
           "--cache-mib", [&o](std::size_t v) { o.store.cache.max_bytes = v << 20; },
           "decoded-block cache size, MiB")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->default_str(std::to_string(store_defaults.cache.max_bytes >> 20));
    app.add_option_function<std::uint32_t>(
           "--block-kib", [&o](std::uint32_t v) { o.store.block_size = v << 10; },
           "largest encoded block, KiB")
        ->check(CLI::Range(4u, 4096u))
        ->default_str(std::to_string(store_defaults.block_size >> 10));
    app.add_option("--encode-threads", o.store.encode_threads, "encode/decode worker threads")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    app.add_option("--max-read-depth", o.store.max_read_depth,
                   "retention: frames decoded per block to read any version, at most (a chain "
                   "keeps a standalone version every N)")
        ->check(CLI::Range(1u, 64u))
        ->capture_default_str();
    app.add_option_function<std::string>(
           "--write-mode",
           [&o](const std::string& v) {
               o.store.write_mode = v == "raw"        ? store::write_compression::raw
                                    : v == "compress" ? store::write_compression::compress
                                                      : store::write_compression::adaptive;
           },
           "how a save's blocks are written: adaptive (compressed while an encode worker is "
           "free, raw otherwise, so a save never waits for the encoder), raw (all raw; "
           "compressed later), compress (all compressed; a save may wait)")
        ->check(CLI::IsMember(std::vector<std::string>{"adaptive", "raw", "compress"}))
        ->default_str("adaptive");
    app.add_option("--idle-compress-seconds", o.store.idle_compress_seconds,
                   "compress the raw blocks of a newest version once no write has arrived for "
                   "this long (the next save usually re-encodes it as a delta anyway)")
        ->check(CLI::Range(0u, 86400u))
        ->capture_default_str();
    app.add_option_function<std::string>(
           "--background-io", [&o](const std::string& v) { o.store.idle_io = v == "idle"; },
           "I/O class of background compression: idle (waits while other I/O is queued) or "
           "normal")
        ->check(CLI::IsMember(std::vector<std::string>{"idle", "normal"}))
        ->default_str("idle");
    app.add_option_function<std::string>(
           "--writeback", [&o](const std::string& v) { o.store.early_writeback = v == "early"; },
           "when a save's data starts going to the disk: early (behind the writer, every 8 "
           "MiB, so the fsync at close has little left) or lazy (the kernel's writeback)")
        ->check(CLI::IsMember(std::vector<std::string>{"early", "lazy"}))
        ->default_str("early");
    app.add_option("--fuse-threads", o.mount.fuse_threads, "FUSE request threads, at most")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    app.add_option("--read-ahead-kib", o.mount.read_ahead_kib,
                   "kernel read-ahead for the mount, KiB (0: leave the default); larger means "
                   "fewer, larger read requests")
        ->check(CLI::Range(0u, 65536u))
        ->capture_default_str();
    app.add_flag(
        "--allow-other", o.mount.allow_other,
        "let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root)");
    app.add_flag("--read-only", o.mount.read_only, "mount read-only");
    app.add_option("--node", o.store.node,
                   "node name: several daemons (one per host) share a store, each with its own "
                   "(default: the host name)");
    app.add_option("--attr-timeout", o.mount.fs.attr_timeout,
                   "seconds the kernel may cache attributes and names: how soon another host's "
                   "commits show in ls and stat here")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    app.add_flag("--noexec", o.mount.noexec, "do not let programs be executed from the mount");
    app.add_flag("--nonempty", o.nonempty,
                 "mount even on a directory that is not empty or is already a mount point "
                 "(what is there is hidden while mounted)");
    app.add_option("--log-file", o.log_file,
                   "log here (default: stderr in the foreground, syslog as a daemon)");
    app.add_option("--log-level", o.log_level,
                   "least severe messages logged: trace, debug, info, warn, error, critical, off "
                   "(default info, debug with -d; else $TPDE_LOG)")
        ->check(CLI::IsMember(std::vector<std::string>{"trace", "debug", "info", "warn", "error",
                                                       "critical", "off"}));
}

void daemon_option_table::apply_mount_options() {
    for (const auto& item : items_) {
        if (item.empty() || generic_mount_items.count(item) || for_other_programs(item)) continue;
        auto eq = item.find('=');
        auto key = item.substr(0, eq);
        CLI::Option* opt = nullptr;
        try {
            opt = key == "o" || key.empty() ? nullptr : app_.get_option(option_for(key));
        } catch (const CLI::OptionNotFound&) {
        }
        if (!opt || opt->get_positional())
            throw CLI::ValidationError("-o",
                                       "unknown mount option '" + item + "' (see tpdefs --help)");
        std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
        if (opt->get_expected_min() == 0) { // a flag: `-o key` or `-o key=true|false`
            if (value.empty()) value = "true";
        } else if (eq == std::string::npos) {
            throw CLI::ValidationError("-o " + key, "needs a value (" + key + "=...)");
        }
        try {
            opt->clear();
            opt->add_result(value);
            opt->run_callback();
        } catch (const CLI::ParseError& e) {
            throw CLI::ValidationError("-o " + item, e.what());
        }
    }
    o_.store.read_only = o_.mount.read_only;
    o_.mount.fs.entry_timeout = o_.mount.fs.attr_timeout;
}

} // namespace tpde::tools

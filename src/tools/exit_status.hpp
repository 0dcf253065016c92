#pragma once
// The exit statuses of tpde and tpdefs, as their man pages document them (EXIT STATUS).
#include <CLI/CLI.hpp>

namespace tpde::tools {

constexpr int exit_ok = 0;
constexpr int exit_failure = 1; // the work failed (the message says why); tpde fsck: problems
constexpr int exit_usage = 2;   // a usage error: unknown option or subcommand, bad value

// Prints what CLI11 has to say about `e` (help and --version to stdout, errors to stderr)
// and returns the documented status: 0 for --help and --version, exit_usage otherwise
// (CLI11's own codes, 105, 106, 109..., are not documented anywhere).
inline int usage_exit(const CLI::App& app, const CLI::Error& e) {
    return app.exit(e) == 0 ? exit_ok : exit_usage;
}

} // namespace tpde::tools

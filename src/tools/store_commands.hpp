#pragma once
// `tpde init|fsck|gc|ls|cat|export|import`: the chain store from the command line.
#include <CLI/CLI.hpp>
#include <functional>

namespace tpde::tools {

// Adds the store subcommands to `app`; the returned function runs whichever was chosen
// (returns -1 when none of them was).
std::function<int()> add_store_commands(CLI::App& app);

} // namespace tpde::tools

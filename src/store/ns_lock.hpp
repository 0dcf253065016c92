#pragma once
// Locks of the namespace that hold across processes and hosts. A commit compares the version
// a path names with the one its writer started from and then renames over the path; an
// unlink or rename of that path on another host must not fall in between (the file would
// come back, or the commit land under a name that moved). ns_mutex_ orders this within one
// process; these flocks order it between processes: flock on one of 256 files under locks/,
// chosen by the path's hash, so there is no lock file per path (unrelated paths that share a
// file only wait for each other for the length of a rename).
#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "context.hpp"

namespace tpde::store {

class ns_locks {
public:
    explicit ns_locks(const store_context& ctx) : ctx_(ctx) {}

    // Holds the locks of `paths` (exclusive) until destroyed. Call with ns_mutex_ held: the
    // descriptors are shared by the threads of this process, which flock does not order.
    class guard {
    public:
        guard(ns_locks& locks, std::initializer_list<std::string> paths);
        ~guard();
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;

    private:
        std::vector<int> held_;
    };

private:
    int fd_for(unsigned stripe);
    const store_context& ctx_;
    std::array<sys::fd, 256> fds_;
};

} // namespace tpde::store

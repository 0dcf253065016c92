#include "ns_lock.hpp"

#include <algorithm>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "tpde/util/xxhash.hpp"

namespace tpde::store {

int ns_locks::fd_for(unsigned stripe) {
    auto& f = fds_[stripe];
    if (!f) {
        if (::mkdirat(ctx_.root_dir.get(), "locks", 0755) != 0 && errno != EEXIST)
            sys::fail("cannot create", (ctx_.root / "locks").string());
        auto name = fmt::format("locks/{:02x}", stripe);
        f = sys::open_at(ctx_.root_dir.get(), name, O_RDWR | O_CREAT, 0644,
                         (ctx_.root / name).string());
    }
    return f.get();
}

ns_locks::guard::guard(ns_locks& locks, std::initializer_list<std::string> paths) {
    std::vector<unsigned> stripes;
    for (const auto& p : paths) stripes.push_back(XXH3_64bits(p.data(), p.size()) & 0xff);
    // Always in stripe order, so two renames never wait for each other in a circle.
    std::sort(stripes.begin(), stripes.end());
    stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
    try {
        for (auto s : stripes) {
            int fd = locks.fd_for(s);
            if (!sys::flock_within(fd, LOCK_EX, lock_wait_ms))
                throw store_error(EIO,
                                  fmt::format("{}/locks/{:02x}: held for more than {} s "
                                              "(by a host that stopped answering?)",
                                              locks.ctx_.root.string(), s, lock_wait_ms / 1000));
            held_.push_back(fd);
        }
    } catch (...) {
        for (int fd : held_) ::flock(fd, LOCK_UN);
        throw;
    }
}

ns_locks::guard::~guard() {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) ::flock(*it, LOCK_UN);
}

} // namespace tpde::store

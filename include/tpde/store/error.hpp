#pragma once
// Errors of the store carry an errno, so the one place that talks to the kernel (the FUSE
// driver) can answer with it, and a message naming the file for the log and the CLI.
#include <cerrno>
#include <stdexcept>
#include <string>

namespace tpde::store {

class store_error : public std::runtime_error {
public:
    store_error(int err, const std::string& what) : std::runtime_error(what), errno_(err) {}
    int error_number() const { return errno_; }

private:
    int errno_;
};

// A stored object failed its checks (bad checksum, truncated, missing base): EIO to callers.
class corrupt_store : public store_error {
public:
    explicit corrupt_store(const std::string& what) : store_error(EIO, what) {}
};

} // namespace tpde::store

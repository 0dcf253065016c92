#pragma once
// Errors of the store carry an errno, so the one place that talks to the kernel (the FUSE
// driver) can answer with it, and a message naming the file for the log and the CLI. They
// are the system-call errors of util (a failed write is already a store error).
#include "tpde/util/os_error.hpp"

namespace tpde::store {

using store_error = util::os_error;

// A stored object failed its checks (bad checksum, truncated, missing base): EIO to callers.
class corrupt_store : public store_error {
public:
    explicit corrupt_store(const std::string& what) : store_error(EIO, what) {}
};

} // namespace tpde::store

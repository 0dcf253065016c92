#pragma once
// An error with an errno: what a failed system call raises, so the one place that talks to
// the kernel (the FUSE driver) can answer with the errno, and the message (naming the file)
// goes to the log or the command line. The store's errors are these (store::store_error).
#include <cerrno>
#include <stdexcept>
#include <string>

namespace tpde::util {

class os_error : public std::runtime_error {
public:
    os_error(int err, const std::string& what) : std::runtime_error(what), errno_(err) {}
    int error_number() const { return errno_; }

private:
    int errno_;
};

} // namespace tpde::util

#pragma once
// The POSIX system calls of the store and the tools: RAII descriptors, loops that finish
// short reads and writes, errors as os_error naming the path, and a fault injector that
// tests use to simulate a crash after any mutating call (of a commit, say).
#include <cstdint>
#include <span>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "tpde/util/os_error.hpp"

namespace tpde::util::sys {

class fd {
public:
    fd() = default;
    explicit fd(int f) : fd_(f) {}
    ~fd() { reset(); }
    fd(fd&& o) noexcept : fd_(o.release()) {}
    fd& operator=(fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.release();
        }
        return *this;
    }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() {
        int f = fd_;
        fd_ = -1;
        return f;
    }
    void reset();

private:
    int fd_{-1};
};

// Throws os_error(errno) with "<what> <path>: <strerror>".
[[noreturn]] void fail(const std::string& what, const std::string& path);
[[noreturn]] void fail(int err, const std::string& what, const std::string& path);

// Crash simulation. arm(n): the n-th mutating call from now on throws injected_crash, and so
// does every one after it (a dead process does nothing more), until disarm().
struct injected_crash : std::runtime_error {
    injected_crash() : std::runtime_error("injected crash") {}
};
void arm_crash_after(long n);
void disarm_crash();
bool crashed();
// Called before every mutating system call.
void mutation_point();

// Path-relative-to-directory calls (dirfd may be AT_FDCWD). `shown` names the file in errors.
fd open_at(int dirfd, const std::string& rel, int flags, mode_t mode, const std::string& shown);
fd open_dir(const std::string& path);
void write_all(int f, std::span<const std::byte> bytes, const std::string& shown);
void pwrite_all(int f, std::span<const std::byte> bytes, std::uint64_t off,
                const std::string& shown);
// The parts one after the other from `off` on, in as few system calls as the kernel allows.
void pwritev_all(int f, std::span<const std::span<const std::byte>> parts, std::uint64_t off,
                 const std::string& shown);
void writev_all(int f, std::span<const std::span<const std::byte>> parts, const std::string& shown);
// Throws os_error(EIO, "<shown>: unexpected end of file") when the file ends first.
void pread_exact(int f, std::span<std::byte> out, std::uint64_t off, const std::string& shown);
void fsync_fd(int f, const std::string& shown);
void fsync_dir(int dirfd, const std::string& rel, const std::string& shown);
void rename_at(int from_dir, const std::string& from, int to_dir, const std::string& to,
               unsigned flags, const std::string& shown);
void link_at(int from_dir, const std::string& from, int to_dir, const std::string& to,
             const std::string& shown);
void unlink_at(int dirfd, const std::string& rel, int flags, const std::string& shown);
// Unlink that tolerates ENOENT; returns whether something was removed.
bool remove_if_exists(int dirfd, const std::string& rel, int flags = 0);
// flock(2) with a limit on the wait: false if `how` (LOCK_SH or LOCK_EX) was not granted
// within `limit_ms`. On a shared filesystem a lock whose holder's host stopped answering is
// held until that host comes back, so nothing waits for one without end.
bool flock_within(int f, int how, unsigned limit_ms);
bool stat_at(int dirfd, const std::string& rel, struct stat& st, bool follow = false);
std::vector<std::string> list_dir(int dirfd, const std::string& rel);
// With each entry's type as readdir gives it (DT_UNKNOWN where the filesystem does not say):
// a listing without a stat per entry, which on a shared filesystem is a round trip each.
struct dir_item {
    std::string name;
    unsigned char type; // DT_*
};
std::vector<dir_item> list_dir_typed(int dirfd, const std::string& rel);
// The whole file, at most `limit` bytes (os_error EFBIG beyond).
std::string read_small_file(int dirfd, const std::string& rel, const std::string& shown,
                            std::size_t limit = 1u << 20);
// The same, from an open descriptor (from offset 0).
std::string read_small_fd(int f, const std::string& shown, std::size_t limit = 1u << 20);

} // namespace tpde::util::sys

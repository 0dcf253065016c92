#include "tpde/util/sys.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <optional>
#include <stdio.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <unistd.h>

namespace tpde::util::sys {

void fd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

void fail(int err, const std::string& what, const std::string& path) {
    throw os_error(err, fmt::format("{} {}: {}", what, path, std::strerror(err)));
}
void fail(const std::string& what, const std::string& path) {
    fail(errno, what, path);
}

namespace {
std::atomic<long> crash_countdown{-1}; // -1: disarmed
std::atomic<bool> crash_happened{false};
} // namespace

void arm_crash_after(long n) {
    crash_happened = false;
    crash_countdown = n;
}
void disarm_crash() {
    crash_countdown = -1;
    crash_happened = false;
}
bool crashed() {
    return crash_happened;
}

void mutation_point() {
    if (crash_happened) throw injected_crash();
    if (crash_countdown.load(std::memory_order_relaxed) < 0) return;
    if (crash_countdown.fetch_sub(1) == 0) {
        crash_happened = true;
        throw injected_crash();
    }
}

namespace {
// A shared filesystem may answer ESTALE while another host renames over the name
// (GlusterFS: about 1 in 200-3,000 opens during such renames): the name is fine, ask again.
template <typename Call>
auto retry_stale(Call&& call) {
    for (int attempt = 1;; ++attempt) {
        auto r = call();
        if (r >= 0 || errno != ESTALE || attempt == 8) return r;
        ::usleep(static_cast<useconds_t>(500 * attempt));
    }
}
} // namespace

fd open_at(int dirfd, const std::string& rel, int flags, mode_t mode, const std::string& shown) {
    if (flags & (O_CREAT | O_TRUNC | O_WRONLY | O_RDWR)) mutation_point();
    int f = retry_stale([&] { return ::openat(dirfd, rel.c_str(), flags | O_CLOEXEC, mode); });
    if (f < 0) fail("cannot open", shown);
    return fd(f);
}

fd open_dir(const std::string& path) {
    int f = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f < 0) fail("cannot open directory", path);
    return fd(f);
}

void write_all(int f, std::span<const std::byte> bytes, const std::string& shown) {
    writev_all(f, std::span(&bytes, 1), shown);
}

void pwrite_all(int f, std::span<const std::byte> bytes, std::uint64_t off,
                const std::string& shown) {
    pwritev_all(f, std::span(&bytes, 1), off, shown);
}

namespace {
// Writes every part, at `off` (advanced) or, without one, at the file position.
void write_parts(int f, std::span<const std::span<const std::byte>> parts,
                 std::optional<std::uint64_t> off, const std::string& shown) {
    mutation_point();
    std::size_t first = 0, skip = 0; // parts[first] from byte `skip` on is not written yet
    std::array<iovec, 64> iov;       // on the stack: this runs for every write request
    for (;;) {
        while (first < parts.size() && skip == parts[first].size()) {
            ++first;
            skip = 0;
        }
        if (first == parts.size()) return;
        std::size_t count = 0;
        for (std::size_t i = first; i < parts.size() && count < iov.size(); ++i) {
            auto part = parts[i].subspan(i == first ? skip : 0);
            iov[count++] = {const_cast<std::byte*>(part.data()), part.size()};
        }
        auto n = off ? ::pwritev(f, iov.data(), static_cast<int>(count), static_cast<off_t>(*off))
                     : ::writev(f, iov.data(), static_cast<int>(count));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot write", shown);
        }
        if (off) *off += static_cast<std::uint64_t>(n);
        for (auto done = static_cast<std::size_t>(n); done > 0;) {
            auto step = std::min(done, parts[first].size() - skip);
            skip += step;
            done -= step;
            if (skip == parts[first].size() && done > 0) {
                ++first;
                skip = 0;
            }
        }
    }
}
} // namespace

void pwritev_all(int f, std::span<const std::span<const std::byte>> parts, std::uint64_t off,
                 const std::string& shown) {
    write_parts(f, parts, off, shown);
}

void writev_all(int f, std::span<const std::span<const std::byte>> parts,
                const std::string& shown) {
    write_parts(f, parts, std::nullopt, shown);
}

void pread_exact(int f, std::span<std::byte> out, std::uint64_t off, const std::string& shown) {
    while (!out.empty()) {
        auto n = ::pread(f, out.data(), out.size(), static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot read", shown);
        }
        if (n == 0) throw os_error(EIO, fmt::format("{}: unexpected end of file", shown));
        out = out.subspan(static_cast<std::size_t>(n));
        off += static_cast<std::uint64_t>(n);
    }
}

void fsync_fd(int f, const std::string& shown) {
    mutation_point();
    if (::fsync(f) != 0) fail("cannot fsync", shown);
}

void fsync_dir(int dirfd, const std::string& rel, const std::string& shown) {
    mutation_point();
    int f = ::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f < 0) fail("cannot open directory", shown);
    fd guard(f);
    if (::fsync(f) != 0) fail("cannot fsync", shown);
}

void rename_at(int from_dir, const std::string& from, int to_dir, const std::string& to,
               unsigned flags, const std::string& shown) {
    mutation_point();
    if (::renameat2(from_dir, from.c_str(), to_dir, to.c_str(), flags) != 0)
        fail("cannot rename", shown);
}

void link_at(int from_dir, const std::string& from, int to_dir, const std::string& to,
             const std::string& shown) {
    mutation_point();
    if (::linkat(from_dir, from.c_str(), to_dir, to.c_str(), 0) != 0) fail("cannot link", shown);
}

void unlink_at(int dirfd, const std::string& rel, int flags, const std::string& shown) {
    mutation_point();
    if (::unlinkat(dirfd, rel.c_str(), flags) != 0) fail("cannot remove", shown);
}

bool remove_if_exists(int dirfd, const std::string& rel, int flags) {
    mutation_point();
    if (::unlinkat(dirfd, rel.c_str(), flags) == 0) return true;
    if (errno == ENOENT) return false;
    fail("cannot remove", rel);
}

bool flock_within(int f, int how, unsigned limit_ms) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
    for (unsigned pause_us = 100;;) {
        if (::flock(f, how | LOCK_NB) == 0) return true;
        if (errno != EWOULDBLOCK && errno != EINTR) fail("cannot lock", "a lock file");
        if (std::chrono::steady_clock::now() >= give_up) return false;
        ::usleep(pause_us);
        pause_us = std::min(pause_us * 2, 20000u); // contention is brief: a rename's length
    }
}

bool stat_at(int dirfd, const std::string& rel, struct stat& st, bool follow) {
    if (retry_stale([&] {
            return ::fstatat(dirfd, rel.c_str(), &st, follow ? 0 : AT_SYMLINK_NOFOLLOW);
        }) == 0)
        return true;
    if (errno == ENOENT) return false;
    fail("cannot stat", rel);
}

std::vector<std::string> list_dir(int dirfd, const std::string& rel) {
    std::vector<std::string> names;
    for (auto& e : list_dir_typed(dirfd, rel)) names.push_back(std::move(e.name));
    return names;
}

std::vector<dir_item> list_dir_typed(int dirfd, const std::string& rel) {
    int f = retry_stale(
        [&] { return ::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (f < 0) fail("cannot open directory", rel);
    DIR* d = ::fdopendir(f);
    if (!d) {
        ::close(f);
        fail("cannot read directory", rel);
    }
    std::vector<dir_item> items;
    while (auto* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") items.push_back({std::move(n), e->d_type});
    }
    ::closedir(d);
    return items;
}

std::string read_small_file(int dirfd, const std::string& rel, const std::string& shown,
                            std::size_t limit) {
    auto f = open_at(dirfd, rel, O_RDONLY, 0, shown);
    return read_small_fd(f.get(), shown, limit);
}

std::string read_small_fd(int f, const std::string& shown, std::size_t limit) {
    std::string s;
    char buf[4096];
    for (;;) {
        auto n = ::pread(f, buf, sizeof buf, static_cast<off_t>(s.size()));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot read", shown);
        }
        if (n == 0) break;
        s.append(buf, static_cast<std::size_t>(n));
        if (s.size() > limit)
            throw os_error(EFBIG, fmt::format("{}: larger than {} bytes", shown, limit));
    }
    return s;
}

} // namespace tpde::util::sys

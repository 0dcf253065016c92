#include "file_io.hpp"

#include "tpde/util/scratch.hpp"
#include "tpde/util/sys.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

namespace tpde::tools {
namespace {
[[noreturn]] void fail(const std::string& what, const std::filesystem::path& p) {
    throw std::system_error(errno, std::generic_category(), what + " " + p.string());
}
} // namespace

input_file::input_file(const std::filesystem::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail("cannot open", path);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("cannot stat", path);
    if (!S_ISREG(st.st_mode)) {
        ::close(fd_);
        errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        fail("not a regular file:", path);
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ > 0) {
        void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
        if (m == MAP_FAILED) fail("cannot map", path);
        map_ = static_cast<std::byte*>(m);
    }
}

input_file::~input_file() {
    if (map_) ::munmap(map_, size_);
    if (fd_ >= 0) ::close(fd_);
}

std::span<const std::byte> input_file::view(std::uint64_t offset, std::size_t n) const {
    if (offset >= size_) return {};
    return {map_ + offset, static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - offset))};
}

std::span<const std::byte> input_file::read(std::uint64_t offset, std::size_t n,
                                            std::vector<std::byte>& into) const {
    const std::size_t len = offset >= size_ ? 0 : std::min<std::uint64_t>(n, size_ - offset);
    const auto out = util::grown_to(into, len);
    read_exact(offset, out);
    return out;
}

void input_file::read_exact(std::uint64_t offset, std::span<std::byte> out) const {
    util::sys::pread_exact(fd_, out, offset, path_.string());
}

output_file::output_file(std::filesystem::path path) : path_(std::move(path)) {
    buffer_.reserve(4 << 20);
    if (path_ == "-") { // standard output: nothing to rename, nothing to clean up
        fd_ = ::dup(STDOUT_FILENO);
        if (fd_ < 0) fail("cannot write", "standard output");
        return;
    }
    // A device or FIFO (`-o /dev/null`) is written in place: renaming over it would replace
    // the device node with a regular file.
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) {
            errno = EISDIR;
            fail("cannot write", path_);
        }
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd_ < 0) fail("cannot write", path_);
        return;
    }
    tmp_ = path_;
    tmp_ += ".tmp-" + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create", tmp_);
}

output_file::~output_file() {
    if (fd_ >= 0) {
        ::close(fd_);
        if (!tmp_.empty()) ::unlink(tmp_.c_str());
    }
}

void output_file::write(std::initializer_list<std::span<const std::byte>> parts) {
    std::size_t total = 0;
    for (auto p : parts) total += p.size();
    if (total < direct_write_min) {
        if (buffer_.size() + total > buffer_.capacity()) flush_buffer();
        for (auto p : parts) buffer_.insert(buffer_.end(), p.begin(), p.end());
        return;
    }
    std::array<std::span<const std::byte>, 8> all;
    if (parts.size() >= all.size()) throw std::invalid_argument("output_file: too many parts");
    std::size_t n = 0;
    all[n++] = buffer_;
    for (auto p : parts) all[n++] = p;
    util::sys::writev_all(fd_, std::span(all.data(), n), written_path().string());
    buffer_.clear();
}

void output_file::flush_buffer() {
    util::sys::write_all(fd_, buffer_, written_path().string());
    buffer_.clear();
}

void output_file::commit() {
    flush_buffer();
    if (::close(fd_) != 0) {
        fd_ = -1;
        if (!tmp_.empty()) ::unlink(tmp_.c_str());
        fail("cannot write", written_path());
    }
    fd_ = -1;
    if (tmp_.empty()) return;
    // Not a rename over the old file: ext4 (auto_da_alloc) answers that by writing the new
    // file back to disk before rename returns, 15-45 ms per 100 MB here. Removing it first
    // (as `zstd -f` does) costs only the moment in which neither name exists.
    const char* failed = nullptr;
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
        failed = "cannot replace";
    else if (::rename(tmp_.c_str(), path_.c_str()) != 0)
        failed = "cannot rename into place";
    if (failed) {
        int e = errno;
        ::unlink(tmp_.c_str());
        errno = e;
        fail(failed, path_);
    }
}

} // namespace tpde::tools

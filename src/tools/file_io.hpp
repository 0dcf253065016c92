#pragma once
// RAII files for the command-line tools. Errors are std::system_error naming the path.
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace tpde::tools {

class input_file {
public:
    explicit input_file(const std::filesystem::path& path);
    ~input_file();
    input_file(const input_file&) = delete;
    input_file& operator=(const input_file&) = delete;

    std::uint64_t size() const { return size_; }
    // The bytes [offset, offset+n) (fewer at end of file) of a read-only mapping of the whole
    // file: no copy. Valid while this object lives. For parsing; bulk data goes through read().
    std::span<const std::byte> view(std::uint64_t offset, std::size_t n) const;
    // Copies the bytes [offset, offset+n) (fewer at end of file) into the start of `into`
    // (util::grown_to) and returns them. For bulk data: reading a cached 100 MB file in
    // 128 KiB preads into one reused buffer and hashing it took 20 ms here, populating the
    // mapping block by block and hashing it there 59 ms.
    std::span<const std::byte> read(std::uint64_t offset, std::size_t n,
                                    std::vector<std::byte>& into) const;
    // Fills `out` from `offset` on; throws if the file ends first.
    void read_exact(std::uint64_t offset, std::span<std::byte> out) const;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    int fd_{-1};
    std::uint64_t size_{0};
    std::byte* map_{nullptr};
};

// Writes to "<path>.tmp-<pid>" and renames over `path` on commit(); an output that was not
// committed (an error midway) is removed, so a failed run never leaves a half-written file
// under the final name. The path "-" is standard output; an existing device or FIFO is
// written in place.
class output_file {
public:
    explicit output_file(std::filesystem::path path);
    ~output_file();
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;

    // Writes `parts` one after the other (at most 7). Small writes collect in a buffer; a
    // larger one goes to the kernel at once, with what is buffered before it, in one writev:
    // flushing 4 MiB at a time stalled the thread that also reads the next blocks for ~5 ms.
    void write(std::initializer_list<std::span<const std::byte>> parts);
    void write(std::span<const std::byte> bytes) { write({bytes}); }
    void commit();

private:
    std::filesystem::path path_;
    std::filesystem::path tmp_;
    int fd_{-1};
    std::vector<std::byte> buffer_;
    static constexpr std::size_t direct_write_min = 16 << 10;
    void flush_buffer();
    const std::filesystem::path& written_path() const { return tmp_.empty() ? path_ : tmp_; }
};

} // namespace tpde::tools

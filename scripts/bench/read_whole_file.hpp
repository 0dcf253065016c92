#pragma once
// The benchmarks' one way to load an input: all of it, into memory (so timing excludes I/O).
#include <cstddef>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <unistd.h>
#include <vector>

namespace tpde::bench {

inline std::vector<std::byte> read_whole_file(const std::filesystem::path& p) {
    std::vector<std::byte> v(std::filesystem::file_size(p));
    int f = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) throw std::runtime_error("cannot open " + p.string());
    std::size_t done = 0;
    while (done < v.size()) {
        auto n = ::read(f, v.data() + done, v.size() - done);
        if (n <= 0) {
            ::close(f);
            throw std::runtime_error("cannot read " + p.string());
        }
        done += static_cast<std::size_t>(n);
    }
    ::close(f);
    return v;
}

} // namespace tpde::bench

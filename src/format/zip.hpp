#pragma once
// The parts of the zip format torch.save uses: stored records, data descriptors, ZIP64.
// Reads the central directory (the only place torch writes record sizes).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tpde::format::detail {

struct zip_entry {
    std::string name;
    std::uint64_t header_offset; // local header, in the span given to read_zip
    std::uint64_t data_offset;
    std::uint64_t size; // stored (compressed) size
    std::uint16_t method;
};

struct zip_archive {
    std::uint64_t start;            // where the archive begins within the span (0 for a plain file)
    std::uint64_t cd_offset;        // central directory, in the span
    std::uint64_t end;              // one past the end-of-central-directory record
    std::vector<zip_entry> entries; // in local-header order
};

// torch names the archive's root folder after the file ("step_000550/data/0"), so names
// differ between checkpoints of one run: records are matched without it.
inline std::string record_name_without_root(const std::string& name) {
    auto slash = name.find('/');
    return slash == std::string::npos ? name : name.substr(slash + 1);
}

// Reads the archive whose end-of-central-directory record starts at `eocd`; offsets inside
// it are relative to the archive's start, which is derived, so archives embedded in a larger
// file (torch.distributed.checkpoint) read too. Throws format_error.
zip_archive read_zip_at(std::span<const std::byte> file, std::uint64_t eocd);

// The last end-of-central-directory record of a file (comment up to 64 KiB), or throws.
std::uint64_t find_last_eocd(std::span<const std::byte> file);

// Every end-of-central-directory record in the file, in order.
std::vector<std::uint64_t> find_all_eocd(std::span<const std::byte> file);

} // namespace tpde::format::detail

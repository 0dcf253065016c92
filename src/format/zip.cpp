#include "zip.hpp"

#include <algorithm>

#include "parse_util.hpp"

namespace tpde::format::detail {
namespace {
constexpr std::uint32_t sig_local = 0x04034b50;
constexpr std::uint32_t sig_central = 0x02014b50;
constexpr std::uint32_t sig_eocd = 0x06054b50;
constexpr std::uint32_t sig_zip64_eocd = 0x06064b50;
constexpr std::uint32_t sig_zip64_locator = 0x07064b50;
constexpr std::size_t eocd_size = 22;
constexpr std::size_t max_entries = 1 << 22; // far beyond any checkpoint, far below memory
} // namespace

std::uint64_t find_last_eocd(std::span<const std::byte> file) {
    if (file.size() < eocd_size) throw format_error("too short for a zip");
    std::uint64_t lowest = file.size() > eocd_size + 0xffff ? file.size() - eocd_size - 0xffff : 0;
    for (std::uint64_t p = file.size() - eocd_size + 1; p-- > lowest;)
        if (read_le<std::uint32_t>(file, p) == sig_eocd) return p;
    throw format_error("no zip end-of-central-directory record");
}

std::vector<std::uint64_t> find_all_eocd(std::span<const std::byte> file) {
    std::vector<std::uint64_t> out;
    const char pat[4] = {'P', 'K', 5, 6};
    auto text = as_text(file);
    for (std::size_t p = text.find(std::string_view(pat, 4)); p != std::string_view::npos;
         p = text.find(std::string_view(pat, 4), p + 4)) {
        if (p + eocd_size <= file.size()) out.push_back(p);
    }
    return out;
}

zip_archive read_zip_at(std::span<const std::byte> file, std::uint64_t eocd) {
    if (read_le<std::uint32_t>(file, eocd) != sig_eocd) throw format_error("bad zip end record");
    std::uint64_t entries = read_le<std::uint16_t>(file, eocd + 10);
    std::uint64_t cd_size = read_le<std::uint32_t>(file, eocd + 12);
    std::uint64_t cd_offset = read_le<std::uint32_t>(file, eocd + 16);
    std::uint64_t comment = read_le<std::uint16_t>(file, eocd + 20);
    std::uint64_t cd_end = eocd; // where the central directory must end, in the file
    if (eocd >= 20 && read_le<std::uint32_t>(file, eocd - 20) == sig_zip64_locator) {
        // ZIP64: the real counts live in the zip64 end record just before the locator. Its
        // stated offset is archive-relative, so find it by walking back over its size.
        // The zip64 record's own offset field is archive-relative; torch writes its fixed
        // 56-byte form directly before the locator, so look there.
        std::uint64_t at = eocd - 20 - 56;
        if (eocd < 76 || read_le<std::uint32_t>(file, at) != sig_zip64_eocd)
            throw format_error("zip64 locator without a zip64 end record");
        entries = read_le<std::uint64_t>(file, at + 32);
        cd_size = read_le<std::uint64_t>(file, at + 40);
        cd_offset = read_le<std::uint64_t>(file, at + 48);
        cd_end = at;
    }
    if (cd_size > cd_end) throw format_error("central directory larger than the file");
    zip_archive z;
    z.cd_offset = cd_end - cd_size;
    if (cd_offset > z.cd_offset) throw format_error("central directory offset past its position");
    z.start = z.cd_offset - cd_offset;
    z.end = eocd + eocd_size + comment;
    if (entries > max_entries || entries * 46 > cd_size)
        throw format_error("implausible zip entry count");

    std::uint64_t p = z.cd_offset;
    z.entries.reserve(static_cast<std::size_t>(entries));
    for (std::uint64_t i = 0; i < entries; ++i) {
        if (read_le<std::uint32_t>(file, p) != sig_central)
            throw format_error("bad central directory entry");
        zip_entry e;
        e.method = read_le<std::uint16_t>(file, p + 10);
        std::uint64_t csize = read_le<std::uint32_t>(file, p + 20);
        std::uint64_t usize = read_le<std::uint32_t>(file, p + 24);
        std::uint64_t name_len = read_le<std::uint16_t>(file, p + 28);
        std::uint64_t extra_len = read_le<std::uint16_t>(file, p + 30);
        std::uint64_t comment_len = read_le<std::uint16_t>(file, p + 32);
        std::uint64_t local = read_le<std::uint32_t>(file, p + 42);
        e.name = std::string(as_text(sub(file, p + 46, name_len)));
        // ZIP64 extra field: the 64-bit values of the fields that read 0xffffffff, in order.
        auto extra = sub(file, p + 46 + name_len, extra_len);
        for (std::uint64_t q = 0; q + 4 <= extra.size();) {
            auto id = read_le<std::uint16_t>(extra, q);
            auto len = read_le<std::uint16_t>(extra, q + 2);
            if (id == 1) {
                std::uint64_t f = q + 4;
                if (usize == 0xffffffff) usize = read_le<std::uint64_t>(extra, f), f += 8;
                if (csize == 0xffffffff) csize = read_le<std::uint64_t>(extra, f), f += 8;
                if (local == 0xffffffff) local = read_le<std::uint64_t>(extra, f), f += 8;
            }
            q += 4 + len;
        }
        e.size = csize;
        e.header_offset = z.start + local;
        if (e.header_offset < z.start || read_le<std::uint32_t>(file, e.header_offset) != sig_local)
            throw format_error("central directory points at no local header");
        std::uint64_t lname = read_le<std::uint16_t>(file, e.header_offset + 26);
        std::uint64_t lextra = read_le<std::uint16_t>(file, e.header_offset + 28);
        e.data_offset = e.header_offset + 30 + lname + lextra;
        if (e.data_offset > z.cd_offset || z.cd_offset - e.data_offset < e.size)
            throw format_error("zip record runs past the central directory");
        z.entries.push_back(std::move(e));
        p += 46 + name_len + extra_len + comment_len;
        if (p > cd_end) throw format_error("central directory overruns its size");
    }
    std::sort(z.entries.begin(), z.entries.end(), [](const zip_entry& a, const zip_entry& b) {
        return a.header_offset < b.header_offset;
    });
    for (std::size_t i = 1; i < z.entries.size(); ++i)
        if (z.entries[i].header_offset < z.entries[i - 1].data_offset + z.entries[i - 1].size)
            throw format_error("overlapping zip records");
    return z;
}

} // namespace tpde::format::detail

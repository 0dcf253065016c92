#pragma once
// An object: the immutable file holding one version's encoded blocks. Frames are appended as
// they are encoded; a footer at the end lists every block (where its frame is, which range
// of the base version it was encoded against) and the version's segment layout, so a later
// re-encoding can match segments by name without parsing the file again.
//
//   header  16 B: "TPDOBJ" 0 1, u64 object uid
//   frames  (codec frames, each self-checking)
//   footer  (binary, little-endian; see docs/store-format.md)
//   tail    32 B: u64 footer offset, u64 footer length, u64 XXH3-64 of the footer, "TPDOEND1"
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tpde/format/segment.hpp"
#include "tpde/store/error.hpp"
#include "tpde/util/sys.hpp"

namespace tpde::store {

namespace sys = util::sys; // the store's system calls

struct block_entry {
    std::uint64_t offset{0}; // in the version's content
    std::uint32_t size{0};
    std::uint64_t frame_pos{0}; // in the object file
    std::uint32_t frame_len{0};
    std::uint64_t ref_offset{0}; // in the base version's content
    std::uint32_t ref_size{0};   // 0: the block has no reference
};

struct object_footer {
    std::uint64_t uid{0};
    std::uint64_t logical_size{0};
    std::string base_version; // empty: standalone, decodable alone
    std::vector<block_entry> blocks;
    format::file_layout layout;
    std::uint64_t elements{0}, changed{0}; // typed elements against the base, for stats
    // Written uncompressed (raw frames) for speed; the store compresses it in the background.
    bool uncompressed{false};
};

inline constexpr std::size_t object_header_size = 16;
// No block or reference range the store writes is larger (block_size is at most 4 MiB).
inline constexpr std::uint32_t max_block_size = 64u << 20;
inline constexpr std::size_t object_tail_size = 32;

std::uint64_t new_object_uid();

// Writes an object under a temporary name; publish() renames it into place after an fsync.
// Destroyed unpublished (an error midway), the temporary file is removed.
class object_writer {
public:
    // When written bytes go to the disk before the fsync at the end: lazy (when the kernel
    // likes), early (writeback started behind the writer, so the final fsync has less left:
    // a writer's object), bounded (also waited for and dropped from the page cache, so
    // background work never holds much dirty data that a writer's fsync would wait behind).
    enum class writeback { lazy, early, bounded };
    object_writer(int dirfd, std::string tmp_name, std::string shown,
                  writeback policy = writeback::lazy);
    ~object_writer();
    object_writer(const object_writer&) = delete;
    object_writer& operator=(const object_writer&) = delete;

    std::uint64_t uid() const { return uid_; }
    // Appends a frame (copied) and returns its offset in the object.
    std::uint64_t append(std::span<const std::byte> frame);
    // The same for a frame given as header and payload. A large payload is not copied: it is
    // gathered, and written with the frames gathered after it in one system call, at the
    // latest by write_gathered(). Until then its bytes must stay where they are.
    std::uint64_t append(std::span<const std::byte> header, std::span<const std::byte> payload);
    // Writes what is buffered and gathered. After a failed write every later call throws:
    // the object lacks frames its block table will list, so it must never be published.
    void write_gathered();
    // Writes footer and tail, fsyncs. `footer.uid` is set from this writer.
    void finish(object_footer footer);
    // Atomically replaces `to_dir/to_name` with this object (the caller fsyncs to_dir).
    void publish(int to_dir, const std::string& to_name);
    // Links this object as `to_dir/to_name` (which must not exist), keeping its temporary
    // name too until drop_temporary_name(): a commit's object so has two links until its
    // record names it, which tells recovery on any node that it is not garbage.
    void publish_linked(int to_dir, const std::string& to_name);
    void drop_temporary_name();
    std::uint64_t bytes_written() const { return pos_ + buffer_.size() + gathered_bytes_; }
    // Reads back a frame written earlier (buffered or not).
    std::vector<std::byte> read_frame(std::uint64_t pos, std::uint32_t len);

private:
    struct gathered_frame {
        std::size_t header_at; // in gathered_headers_
        std::size_t header_size;
        std::span<const std::byte> payload;
    };
    void check_usable() const;
    void put(std::span<const std::span<const std::byte>> parts); // at pos_, advancing it
    void write_back_behind();
    int dirfd_;
    std::string tmp_name_, shown_;
    sys::fd fd_;
    std::uint64_t uid_;
    // On disk: [0, pos_). Then buffer_ (copies), then the gathered frames.
    std::uint64_t pos_{0};
    std::vector<std::byte> buffer_;
    std::vector<gathered_frame> gathered_;
    std::vector<std::byte> gathered_headers_;
    std::size_t gathered_bytes_{0};
    std::vector<std::span<const std::byte>> parts_; // write_gathered()'s, kept for its capacity
    int failed_errno_{0};                           // a write failed: the object is incomplete
    bool has_temporary_name_{true};
    writeback policy_;
    std::uint64_t started_until_{0}; // writeback started for [0, started_until_)
    std::uint64_t settled_until_{0}; // and finished (and dropped from the cache) below this
};

// A published object opened for reading: footer parsed and checked.
class object_file {
public:
    // Throws corrupt_store naming `shown` when the footer is damaged.
    object_file(sys::fd f, std::string shown);
    const object_footer& footer() const { return footer_; }
    std::uint64_t file_size() const { return file_size_; }
    std::vector<std::byte> read_frame(std::size_t block) const;
    // Into `buf` (resized): a reused buffer is not zeroed again for every frame.
    void read_frame_into(std::size_t block, std::vector<std::byte>& buf) const;
    const std::string& shown() const { return shown_; }

private:
    sys::fd fd_;
    std::string shown_;
    object_footer footer_;
    std::uint64_t file_size_{0};
};

// Serialisation, exposed for tests and fsck.
std::vector<std::byte> encode_footer(const object_footer& f);
object_footer decode_footer(std::span<const std::byte> bytes, const std::string& shown);

} // namespace tpde::store

#pragma once
// The chain store: a plain directory that keeps checkpoint files losslessly as TPDE deltas.
// The namespace (directories, files, symlinks) is mirrored under ns/; each file there is a
// hard link of its version record in its chain, and its bytes live in the chain's objects.
// A new version is stored standalone; when it commits, the previous version of its chain is
// re-encoded as a delta against it (reverse deltas), so the newest version reads with one
// frame per block and deleting the oldest frees its bytes at once. See docs/store-format.md.
// No FUSE here: paths are relative to the store's root ("a/b.pt", "" for the root).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <sys/statvfs.h>
#include <thread>
#include <vector>

#include "tpde/cache/block_cache.hpp"
#include "tpde/store/error.hpp"

namespace tpde::store {

enum class write_compression { adaptive, raw, compress };

struct store_options {
    unsigned encode_threads{std::max(1u, std::thread::hardware_concurrency())};
    std::uint32_t block_size{128u << 10};
    cache::cache_options cache{}; // the decoded-block cache shared by every reader
    // Blocks decoded ahead of a sequential reader, on the encode workers.
    unsigned read_ahead_blocks{16};
    // Frames decoded per block to read any version, at most (the newest: 1). A chain longer
    // than this keeps a standalone version every max_read_depth versions.
    unsigned max_read_depth{8};
    // Re-encoding and garbage collection on a background thread (a mount) or inline, before
    // the call that caused them returns (tools, tests).
    bool background_maintenance{false};
    // With background maintenance: every this many seconds of idleness, check every chain
    // for work left undone (by a node that stopped midway, say). 0: never.
    unsigned sweep_seconds{600};
    bool read_only{false};
    // The node (host) this process writes for: several daemons share one store, each with a
    // node name of its own; work in progress and its recovery are per node. Empty: the host
    // name. Letters, digits, '.', '_', '-'; at most 64.
    std::string node{};
    int zstd_level{1};
    // How a writer codes a new version: adaptive (the default) compresses each block on the
    // encode pool while a worker is free and writes it raw otherwise, so a save never waits
    // for the encoder; raw writes every block uncompressed (maintenance compresses later);
    // compress codes every block (less disk traffic; a writer may wait for the encoder).
    write_compression write_mode{write_compression::adaptive};
    // Maintenance compresses the raw blocks of a newest version only once no write has
    // arrived for this long: the next save usually re-encodes it anyway (as a delta), so
    // compressing it now would write its bytes a third time.
    unsigned idle_compress_seconds{30};
    // Background maintenance's disk I/O in the idle class (it waits while a writer's is
    // queued), besides its low CPU priority.
    bool idle_io{true};
    // A writer's object starts going to the disk while it is written (sync_file_range
    // behind the writer), so the fsync of its commit has little left to do.
    bool early_writeback{true};
};

enum class entry_type { file, directory, symlink, other };

struct file_stat {
    entry_type type{entry_type::other};
    std::uint32_t mode{0}; // permission bits only
    std::uint64_t size{0}; // logical bytes
    std::uint64_t stored_bytes{0};
    struct timespec atime {
    }, mtime{}, ctime{};
    std::uint64_t ino{0}; // stable while the entry exists
    std::uint32_t uid{0}, gid{0};
    std::string version; // files: the committed version's id (new with every commit)
};

struct dir_entry {
    std::string name;
    entry_type type;
};

// What the store knows about one committed file.
struct version_info {
    std::string chain_key; // "checkpoint-#/optimizer.pt"
    std::string chain_id;  // directory name under chains/
    std::string version;   // id of this version
    std::string base;      // version it is a delta against ("" = standalone)
    std::string base_path; // path the base was committed under
    unsigned depth{0};     // frames per block to read it, minus one
    std::uint64_t logical_size{0};
    std::uint64_t stored_bytes{0};
    std::size_t blocks{0};
    std::uint64_t elements{0}, changed{0}; // against its base, over typed blocks
};

struct store_counters {
    std::uint64_t commits{0};
    std::uint64_t bytes_committed{0}; // logical
    std::uint64_t bytes_written{0};   // objects, including re-encodings
    std::uint64_t reencodes{0};       // compactions and rebases
    std::uint64_t versions_freed{0};
    std::uint64_t bytes_freed{0};
    std::uint64_t frames_decoded{0};
    std::uint64_t maintenance_pending{0};  // queued or running re-encodings and collections
    std::uint64_t compressions_waiting{0}; // raw blocks to compress once writes stop
};

struct recovery_report {
    std::vector<std::string> removed; // what an unclean stop left behind
};

struct fsck_report {
    std::vector<std::string> problems; // one line each, naming the affected paths
    std::vector<std::string> repaired;
    std::uint64_t files{0}, versions{0};
    // Every frame of every version's object, each decoded and checked exactly once (never
    // served from the cache): frames = frames_damaged + frames_unchecked + the good ones.
    std::uint64_t frames{0};             // frames in the objects of all versions
    std::uint64_t frames_checked{0};     // decoded and found intact
    std::uint64_t frames_damaged{0};     // failed their check (one problem line each)
    std::uint64_t frames_unchecked{0};   // not checkable: their reference is damaged
    std::uint64_t versions_unchecked{0}; // their object (or a base's) does not open
    bool ok() const { return problems.empty(); }
};

// A committed file opened for reading: a snapshot (a later commit to the path does not
// change what this reader returns). Safe to use from several threads.
class file_reader {
public:
    virtual ~file_reader() = default;
    virtual std::uint64_t size() const = 0;
    // Fills `out` from `offset`; returns the bytes read (short only at end of file).
    virtual std::size_t read(std::uint64_t offset, std::span<std::byte> out) const = 0;
};

// Builds a new version of one path. Sequential writes from offset 0 stream through the
// encoder with memory bounded by a few blocks; anything else (a write elsewhere, a
// truncate, a read) moves the file to a staging file on the store's disk, encoded on commit.
// One thread at a time.
class file_writer {
public:
    virtual ~file_writer() = default; // uncommitted bytes are dropped
    virtual void write(std::uint64_t offset, std::span<const std::byte> bytes) = 0;
    virtual void truncate(std::uint64_t size) = 0;
    virtual std::size_t read(std::uint64_t offset, std::span<std::byte> out) = 0;
    virtual std::uint64_t size() const = 0;
    // Makes everything written durable as the path's content. Returns false, committing
    // nothing, when the path no longer names the file this writer started from (it was
    // unlinked or replaced meanwhile: POSIX drops such data). Writing may continue after.
    virtual bool commit() = 0;
    // The file was renamed: later commits go to `path`.
    virtual void set_path(const std::string& path) = 0;
    virtual bool dirty() const = 0;
};

class store {
public:
    // Opens the store at `root`, creating it when `root` is empty or missing. Removes what an
    // unclean stop left behind (listed in *report) unless read-only.
    static std::unique_ptr<store> open(const std::filesystem::path& root,
                                       const store_options& opts = {},
                                       recovery_report* report = nullptr);
    // Creates an empty store; fails unless `root` is missing or an empty directory.
    static void init(const std::filesystem::path& root);
    // The node name `opts` stands for (the host name when unset), checked.
    static std::string node_name(const store_options& opts);
    virtual ~store() = default;

    virtual const store_options& options() const = 0;
    virtual const std::filesystem::path& root() const = 0;

    // Namespace, with POSIX meaning and errno (store_error) on failure.
    virtual file_stat stat(const std::string& path) = 0;
    virtual std::vector<dir_entry> list(const std::string& dir) = 0;
    virtual void mkdir(const std::string& path, std::uint32_t mode) = 0;
    virtual void rmdir(const std::string& path) = 0;
    virtual void unlink(const std::string& path) = 0;
    // flags: RENAME_NOREPLACE / RENAME_EXCHANGE as renameat2(2).
    virtual void rename(const std::string& from, const std::string& to, unsigned flags = 0) = 0;
    virtual void symlink(const std::string& target, const std::string& path) = 0;
    virtual std::string readlink(const std::string& path) = 0;
    virtual void chmod(const std::string& path, std::uint32_t mode) = 0;
    // nullopt leaves that time as it is.
    virtual void utimens(const std::string& path, std::optional<timespec> atime,
                         std::optional<timespec> mtime) = 0;
    virtual void truncate(const std::string& path, std::uint64_t size) = 0;
    virtual std::vector<std::byte> getxattr(const std::string& path, const std::string& name) = 0;
    // flags: XATTR_CREATE / XATTR_REPLACE.
    virtual void setxattr(const std::string& path, const std::string& name,
                          std::span<const std::byte> value, int flags) = 0;
    virtual std::vector<std::string> listxattr(const std::string& path) = 0;
    virtual void removexattr(const std::string& path, const std::string& name) = 0;
    virtual struct statvfs statfs() = 0;

    // Files. create() commits an empty file (EEXIST if `exclusive` and the path exists).
    virtual void create(const std::string& path, std::uint32_t mode, bool exclusive) = 0;
    // A writer starting from the path's current content (empty when `truncate`).
    virtual std::unique_ptr<file_writer> open_writer(const std::string& path, bool truncate) = 0;
    virtual std::unique_ptr<file_reader> open_reader(const std::string& path) = 0;
    virtual version_info info(const std::string& path) = 0;

    // Maintenance: waits for queued re-encodings and collections to finish.
    virtual void wait_idle() = 0;
    // Frees every version no file names any more (re-encoding what depended on it).
    virtual void collect_garbage() = 0;
    // Checks every object (decoding every frame), record and file; with `repair`, removes
    // only what no file needs (unfinished leftovers, unreachable versions).
    virtual fsck_report fsck(bool repair) = 0;
    // Bytes under objects/ (what the store occupies, apart from small records).
    virtual std::uint64_t stored_bytes() = 0;

    virtual store_counters counters() const = 0;
    virtual cache::cache_counters cache_counters() const = 0;
};

// "checkpoint-1500/optimizer.pt" -> "checkpoint-#/optimizer.pt": digit runs normalised, so
// the files of successive checkpoints share a chain.
std::string chain_key_for(const std::string& path);

} // namespace tpde::store

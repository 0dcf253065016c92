#pragma once
// The mounted filesystem's logic on node ids: what each FUSE operation does to the store,
// with open files shared per node so a writer's bytes are visible through every handle.
// Throws store_error; fuse_ops.cpp turns that into an errno reply, in one place. No libfuse
// here: tests drive it in process (tests/unit/filesystem_test.cpp).
//
// Lock order, outermost first:
//   1. open_file::mutex of a node (several at once only in rename, taken in address order);
//   2. filesystem::files_mutex_ (held briefly, never while calling the store);
//   3. node_table's own mutex (inside each node_table call, never held across calls);
//   4. the store's locks (ns_mutex_, chain locks, the block cache; see store_impl.hpp).
// A thread holding a later lock never waits for an earlier one.
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <vector>

#include "node_table.hpp"
#include "tpde/fs/mount.hpp"
#include "tpde/store/store.hpp"

namespace tpde::fs {

// What a setattr changes: each field only when it is to be set. Times are resolved ("now"
// read from the clock) by the caller.
struct attr_change {
    std::optional<std::uint32_t> mode; // permission bits
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    std::optional<std::uint64_t> size;
    std::optional<timespec> atime, mtime;
};

// The state of a node while handles are open on it.
struct open_file {
    std::shared_mutex mutex; // shared: reads without a writer; exclusive: everything else
    std::unique_ptr<store::file_writer> writer; // present while a handle writes
    int handles{0};
    int writing_handles{0};
    // What the last commit through this node made: read handles switch to it once the
    // writer is gone (their own snapshot may predate it).
    std::shared_ptr<store::file_reader> committed;
};

struct handle {
    std::uint64_t node{0};
    std::shared_ptr<open_file> file;
    std::shared_ptr<store::file_reader> reader; // snapshot taken at open
    bool writes{false};
    bool append{false};
};

struct entry {
    std::uint64_t node{0};
    struct stat attr {};
};

struct dir_listing {
    std::vector<store::dir_entry> entries; // with "." and ".." first
};

class filesystem {
public:
    filesystem(store::store& s, fs_options opts = {});
    const fs_options& options() const { return opts_; }
    store::store& backing() { return store_; }

    entry lookup(std::uint64_t parent, const std::string& name);
    void forget(std::uint64_t node, std::uint64_t n);
    struct stat getattr(std::uint64_t node);
    struct stat setattr(std::uint64_t node, const attr_change& change, handle* h);

    entry mkdir(std::uint64_t parent, const std::string& name, mode_t mode);
    void rmdir(std::uint64_t parent, const std::string& name);
    void unlink(std::uint64_t parent, const std::string& name);
    void rename(std::uint64_t parent, const std::string& name, std::uint64_t new_parent,
                const std::string& new_name, unsigned flags);
    entry symlink(const std::string& target, std::uint64_t parent, const std::string& name);
    std::string readlink(std::uint64_t node);

    // keep_cache: the kernel may keep pages it cached for this node (content unchanged).
    std::unique_ptr<handle> open(std::uint64_t node, int flags, bool& keep_cache);
    std::pair<entry, std::unique_ptr<handle>> create(std::uint64_t parent, const std::string& name,
                                                     mode_t mode, int flags);
    std::size_t read(handle& h, std::uint64_t offset, std::span<std::byte> out);
    std::size_t write(handle& h, std::uint64_t offset, std::span<const std::byte> in);
    void flush(handle& h);
    void fsync(handle& h) { flush(h); }
    void release(std::unique_ptr<handle> h);

    dir_listing opendir(std::uint64_t node);
    // The attributes of one listed entry (readdirplus), with a lookup reference.
    entry lookup_listed(std::uint64_t dir, const store::dir_entry& e);

    std::vector<std::byte> getxattr(std::uint64_t node, const std::string& name);
    void setxattr(std::uint64_t node, const std::string& name, std::span<const std::byte> value,
                  int flags);
    std::vector<std::string> listxattr(std::uint64_t node);
    void removexattr(std::uint64_t node, const std::string& name);
    struct statvfs statfs() {
        return store_.statfs();
    }

    // Mount-wide counters as JSON (the root's user.tpde.stats).
    std::string stats_json();
    // For log lines: the path of `node` in the mount ("/a/b", "/" for the root), with
    // `name` appended when given; "(unlinked file)" when the node has no name. Never throws.
    std::string describe(std::uint64_t node, const std::string& name = "") const noexcept;
    // Unmount: commits every file still being written.
    void shutdown();

private:
    std::string path(std::uint64_t node) const;
    struct stat to_stat(std::uint64_t node, const store::file_stat& f) const;
    std::shared_ptr<open_file> attach(std::uint64_t node);
    void detach(std::uint64_t node, const std::shared_ptr<open_file>& f);
    void commit_locked(std::uint64_t node, open_file& f);
    std::vector<std::byte> virtual_xattr(std::uint64_t node, const std::string& name);

    store::store& store_;
    fs_options opts_;
    node_table nodes_;
    std::mutex files_mutex_; // attach/detach of open_file, cached_version_
    // Per node, the version whose pages the kernel may hold (it read them through us).
    std::unordered_map<std::uint64_t, std::string> cached_version_;
    std::atomic<std::uint64_t> bytes_written_{0}, bytes_read_{0};
};

} // namespace tpde::fs

#pragma once
// The store's implementation class: opening (store_open.cpp), recovery at open
// (recovery.cpp), namespace and files (store.cpp), the commit protocol (commit.cpp) and
// fsck (fsck.cpp). Internal to src/store.
//
// Locks: ns_mutex_ (a commit's check-then-rename against rename and unlink) and a chain's
// chain_lock (flock on chains/<id>/lock: readers shared, object swaps and deletions
// exclusive) are never held together; either may be held while the block cache takes its own
// mutexes, never the other way round. The store and node locks (lock_file_, node_lock_) are held
// for the store's lifetime. The maintenance queue's mutex is held only around its own queue.
// Callers above (the FUSE layer) call in holding their own locks, which therefore come first.
#include <memory>
#include <mutex>
#include <optional>

#include "chain.hpp"
#include "file_writer.hpp"
#include "maintenance.hpp"
#include "ns_lock.hpp"

namespace tpde::store {

class store_impl final : public store, public version_publisher {
public:
    store_impl(const std::filesystem::path& root, const store_options& opts);
    ~store_impl() override;
    void recover(recovery_report* report);

    const store_options& options() const override { return ctx_.opts; }
    const std::filesystem::path& root() const override { return ctx_.root; }

    file_stat stat(const std::string& path) override;
    std::vector<dir_entry> list(const std::string& dir) override;
    void mkdir(const std::string& path, std::uint32_t mode) override;
    void rmdir(const std::string& path) override;
    void unlink(const std::string& path) override;
    void rename(const std::string& from, const std::string& to, unsigned flags) override;
    void symlink(const std::string& target, const std::string& path) override;
    std::string readlink(const std::string& path) override;
    void chmod(const std::string& path, std::uint32_t mode) override;
    void utimens(const std::string& path, std::optional<timespec> atime,
                 std::optional<timespec> mtime) override;
    void truncate(const std::string& path, std::uint64_t size) override;
    std::vector<std::byte> getxattr(const std::string& path, const std::string& name) override;
    void setxattr(const std::string& path, const std::string& name,
                  std::span<const std::byte> value, int flags) override;
    std::vector<std::string> listxattr(const std::string& path) override;
    void removexattr(const std::string& path, const std::string& name) override;
    struct statvfs statfs() override;

    void create(const std::string& path, std::uint32_t mode, bool exclusive) override;
    std::unique_ptr<file_writer> open_writer(const std::string& path, bool truncate) override;
    std::unique_ptr<file_reader> open_reader(const std::string& path) override;
    version_info info(const std::string& path) override;

    void wait_idle() override;
    void collect_garbage() override;
    fsck_report fsck(bool repair) override;
    std::uint64_t stored_bytes() override;
    store_counters counters() const override;
    cache::cache_counters cache_counters() const override { return ctx_.cache.counters(); }

    std::string publish(const std::string& path, const std::string& expected, object_encoder& enc,
                        std::uint64_t size) override;
    std::shared_ptr<const version_reader> open_version_of(const std::string& path) override;

private:
    std::string publish_new(const std::string& path, const std::string& expected,
                            object_encoder& enc, std::uint64_t size, std::uint32_t mode);
    void check_writable() const;
    void take_writer_locks();
    // Removes the work in progress of nodes whose daemon is not running (fsck --repair).
    void reclaim_dead_nodes(std::vector<std::string>& removed);
    // The record of the file at `path` (ENOENT, EISDIR...), and its attributes in *st.
    version_record record_at(const std::string& path, struct stat* st = nullptr);
    // The attributes of ns/`rel` in `st`, and its record if it is a regular file.
    std::optional<version_record> read_record(const std::string& rel, const std::string& path,
                                              struct stat& st);
    std::string full(const std::string& path) const { return ctx_.shown_ns(path); }

    store_context ctx_;
    sys::fd lock_file_;       // flock, shared: a writer of the multi-node store format
    sys::fd node_lock_;       // flock of nodes/<node>.lock: one writable process per node
    std::mutex ns_mutex_;     // makes check-then-rename of a commit atomic against rename/unlink
    ns_locks ns_locks_{ctx_}; // the same across processes and hosts (taken inside ns_mutex_)
    // Declared last: destroyed first, so queued work finishes while everything it uses lives.
    std::unique_ptr<maintenance_queue> maintenance_;
};

// "a/b" checked (no "..", no empty components) and as a path relative to ns/ ("." for "").
std::string ns_rel(const std::string& path);
// Whether a daemon of `node` has the store open (holds nodes/<node>.lock).
bool node_running(int root_dir, const std::string& node);
// A tmp/ entry that no node owns: a file (nodes keep their work in directories), or an
// unfinished chain of a tpdefs before node names (`chain-123-0123456789abcdef`).
bool single_writer_leftover(const std::string& name, bool is_directory);
// The directory of a path relative to ns/ ("." at the top).
std::string parent_rel(const std::string& rel);

} // namespace tpde::store

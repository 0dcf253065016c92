#pragma once
// The store's implementation class, shared by store.cpp (namespace, commit, open) and
// fsck.cpp. Internal to src/store.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "store/chain.hpp"
#include "store/file_writer.hpp"

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
    struct task {
        bool compact; // else collect
        std::string chain_id, version;
        bool operator<(const task& o) const {
            return std::tie(compact, chain_id, version) <
                   std::tie(o.compact, o.chain_id, o.version);
        }
    };
    void schedule(task t);
    void run_task(const task& t);
    void maintenance_loop();
    std::string publish_new(const std::string& path, const std::string& expected,
                            object_encoder& enc, std::uint64_t size, std::uint32_t mode);
    void check_writable() const;
    // The record of the file at `path` (ENOENT, EISDIR...), read through `fd` if given.
    version_record record_at(const std::string& path, struct stat* st = nullptr);
    std::string full(const std::string& path) const { return ctx_.shown_ns(path); }

    store_context ctx_;
    sys::fd lock_file_;
    std::mutex ns_mutex_; // makes check-then-rename of a commit atomic against rename/unlink

    mutable std::mutex tasks_mutex_;
    std::condition_variable tasks_cv_, idle_cv_;
    std::deque<task> tasks_;
    std::set<task> queued_;
    bool busy_{false}, stopping_{false};
    std::thread worker_;
};

// "a/b" checked (no "..", no empty components) and as a path relative to ns/ ("." for "").
std::string ns_rel(const std::string& path);

} // namespace tpde::store

#pragma once
// FUSE node ids for store paths. The kernel names files by node id; the store by path. A
// node keeps its id across renames (its path, and its descendants', are rewritten) and
// lives until the kernel forgets it, even after unlink while open.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace tpde::fs {

struct open_file; // defined in filesystem.hpp

class node_table {
public:
    static constexpr std::uint64_t root_id = 1; // FUSE_ROOT_ID

    node_table();
    // The node for `path`, created if needed, with one more kernel lookup reference.
    std::uint64_t lookup(const std::string& path);
    // Returns whether the node is gone (no lookups, no open file).
    bool forget(std::uint64_t id, std::uint64_t n);
    // The node's current path; nullopt once unlinked (or unknown).
    std::optional<std::string> path_of(std::uint64_t id) const;
    std::string child_path(std::uint64_t parent, const std::string& name) const; // ENOENT if gone
    // The namespace changed: `from` now lives at `to` (with everything below it), and
    // whatever was at `to` is unlinked. Returns the nodes whose path changed.
    std::vector<std::uint64_t> moved(const std::string& from, const std::string& to);
    void exchanged(const std::string& a, const std::string& b);
    void unlinked(const std::string& path);

    // Per-node open-file state, kept while any handle is open.
    std::shared_ptr<open_file> file_of(std::uint64_t id) const;
    void set_file(std::uint64_t id, std::shared_ptr<open_file> f);
    // Open files of `path` and everything below it (a rename moves them).
    std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>>
    files_under(const std::string& path) const;
    std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>> all_files() const;

private:
    struct node {
        std::string path;
        std::uint64_t lookups{0};
        bool linked{true};
        std::shared_ptr<open_file> file;
    };
    void rename_subtree_locked(const std::string& from, const std::string& to,
                               std::vector<std::uint64_t>* changed);
    mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, node> nodes_;
    std::map<std::string, std::uint64_t> by_path_; // ordered: a directory's subtree is a range
    std::uint64_t next_id_{2};
};

} // namespace tpde::fs

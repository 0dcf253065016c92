#include "node_table.hpp"

#include "tpde/store/error.hpp"

namespace tpde::fs {

node_table::node_table() {
    nodes_[root_id] = node{"", 1, true, nullptr};
    by_path_[""] = root_id;
}

std::uint64_t node_table::lookup(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto it = by_path_.find(path);
    if (it != by_path_.end()) {
        nodes_[it->second].lookups++;
        return it->second;
    }
    auto id = next_id_++;
    nodes_[id] = node{path, 1, true, nullptr};
    by_path_[path] = id;
    return id;
}

bool node_table::forget(std::uint64_t id, std::uint64_t n) {
    std::lock_guard lock(mutex_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return true;
    if (id == root_id) return false;
    it->second.lookups = it->second.lookups > n ? it->second.lookups - n : 0;
    if (it->second.lookups == 0 && !it->second.file) {
        if (it->second.linked) {
            auto p = by_path_.find(it->second.path);
            if (p != by_path_.end() && p->second == id) by_path_.erase(p);
        }
        nodes_.erase(it);
        return true;
    }
    return false;
}

std::optional<std::string> node_table::path_of(std::uint64_t id) const {
    std::lock_guard lock(mutex_);
    auto it = nodes_.find(id);
    if (it == nodes_.end() || !it->second.linked) return std::nullopt;
    return it->second.path;
}

std::string node_table::child_path(std::uint64_t parent, const std::string& name) const {
    auto p = path_of(parent);
    if (!p) throw store::store_error(ENOENT, "parent directory is gone");
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        throw store::store_error(EINVAL, "invalid name '" + name + "'");
    return p->empty() ? name : *p + "/" + name;
}

void node_table::rename_subtree_locked(const std::string& from, const std::string& to,
                                       std::vector<std::uint64_t>* changed) {
    std::vector<std::pair<std::string, std::uint64_t>> moving;
    auto prefix = from + "/";
    if (auto it = by_path_.find(from); it != by_path_.end())
        moving.emplace_back(it->first, it->second);
    for (auto it = by_path_.lower_bound(prefix);
         it != by_path_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
        moving.emplace_back(it->first, it->second);
    for (auto& [p, id] : moving) by_path_.erase(p);
    for (auto& [p, id] : moving) {
        auto np = to + p.substr(from.size());
        nodes_[id].path = np;
        by_path_[np] = id;
        if (changed) changed->push_back(id);
    }
}

std::vector<std::uint64_t> node_table::moved(const std::string& from, const std::string& to) {
    std::lock_guard lock(mutex_);
    std::vector<std::uint64_t> changed;
    if (from == to) return changed;
    // Whatever was at `to` is replaced: unlinked, though still open perhaps.
    if (auto it = by_path_.find(to); it != by_path_.end()) {
        nodes_[it->second].linked = false;
        by_path_.erase(it);
    }
    rename_subtree_locked(from, to, &changed);
    return changed;
}

void node_table::exchanged(const std::string& a, const std::string& b) {
    std::lock_guard lock(mutex_);
    const std::string tmp = "\x01tpdefs-exchange";
    rename_subtree_locked(a, tmp, nullptr);
    rename_subtree_locked(b, a, nullptr);
    rename_subtree_locked(tmp, b, nullptr);
}

void node_table::unlinked(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto it = by_path_.find(path);
    if (it == by_path_.end()) return;
    auto& n = nodes_[it->second];
    n.linked = false;
    by_path_.erase(it);
}

std::shared_ptr<open_file> node_table::file_of(std::uint64_t id) const {
    std::lock_guard lock(mutex_);
    auto it = nodes_.find(id);
    return it == nodes_.end() ? nullptr : it->second.file;
}

void node_table::set_file(std::uint64_t id, std::shared_ptr<open_file> f) {
    std::lock_guard lock(mutex_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    it->second.file = std::move(f);
    if (!it->second.file && it->second.lookups == 0) {
        if (it->second.linked) {
            auto p = by_path_.find(it->second.path);
            if (p != by_path_.end() && p->second == id) by_path_.erase(p);
        }
        nodes_.erase(it);
    }
}

std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>>
node_table::files_under(const std::string& path) const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>> out;
    auto prefix = path + "/";
    auto add = [&](std::uint64_t id) {
        auto& n = nodes_.at(id);
        if (n.file) out.emplace_back(id, n.file);
    };
    if (auto it = by_path_.find(path); it != by_path_.end()) add(it->second);
    for (auto it = by_path_.lower_bound(prefix);
         it != by_path_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
        add(it->second);
    return out;
}

std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>> node_table::all_files() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::uint64_t, std::shared_ptr<open_file>>> out;
    for (auto& [id, n] : nodes_)
        if (n.file) out.emplace_back(id, n.file);
    return out;
}

} // namespace tpde::fs

#include "filesystem.hpp"

#include <algorithm>
#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace tpde::fs {
namespace {

constexpr const char* virtual_prefix = "user.tpde.";
// The virtual attributes listxattr shows (units in the man page, tpdefs(1)); "sparsity" is
// read as an old name of changed_fraction, and not listed.
constexpr const char* file_attributes[] = {"logical_size", "stored_size",     "ratio",
                                           "parent",       "chain",           "depth",
                                           "version",      "changed_fraction"};
constexpr const char* root_attributes[] = {"stats", "maintenance_pending"};

bool is_virtual(const std::string& name) {
    return name.rfind(virtual_prefix, 0) == 0;
}

// Files and their logical bytes below `dir` (the root's user.tpde.stats).
void add_usage(store::store& s, const std::string& dir, std::uint64_t& files,
               std::uint64_t& bytes) {
    for (auto& e : s.list(dir)) {
        auto p = dir.empty() ? e.name : dir + "/" + e.name;
        try {
            if (e.type == store::entry_type::directory) {
                add_usage(s, p, files, bytes);
            } else if (e.type == store::entry_type::file) {
                bytes += s.stat(p).size;
                ++files;
            }
        } catch (const store::store_error&) {
            // removed since the listing
        }
    }
}

std::vector<std::byte> text_bytes(const std::string& s) {
    auto b = std::as_bytes(std::span(s));
    return {b.begin(), b.end()};
}

} // namespace

filesystem::filesystem(store::store& s, fs_options opts) : store_(s), opts_(opts) {}

std::string filesystem::describe(std::uint64_t node, const std::string& name) const noexcept {
    try {
        auto p = nodes_.path_of(node);
        if (!p) return name.empty() ? "(unlinked file)" : "(unlinked directory)/" + name;
        std::string out = "/" + *p;
        if (!name.empty()) out += (p->empty() ? "" : "/") + name;
        return out;
    } catch (...) {
        return "(node " + std::to_string(node) + ")";
    }
}

std::string filesystem::path(std::uint64_t node) const {
    auto p = nodes_.path_of(node);
    if (!p) throw store::store_error(ENOENT, "no such file (unlinked)");
    return *p;
}

struct stat filesystem::to_stat(std::uint64_t node, const store::file_stat& f) const {
    struct stat st {};
    st.st_ino = node;
    switch (f.type) {
    case store::entry_type::directory:
        st.st_mode = S_IFDIR;
        break;
    case store::entry_type::symlink:
        st.st_mode = S_IFLNK;
        break;
    default:
        st.st_mode = S_IFREG;
        break;
    }
    st.st_mode |= f.mode;
    st.st_nlink = f.type == store::entry_type::directory ? 2 : 1;
    st.st_size = static_cast<off_t>(f.size);
    st.st_blocks = static_cast<blkcnt_t>((f.stored_bytes + 511) / 512);
    st.st_blksize = 1 << 20; // = max_write: cp and stdio buffer this much per write
    st.st_uid = f.uid;
    st.st_gid = f.gid;
    st.st_atim = f.atime;
    st.st_mtim = f.mtime;
    st.st_ctim = f.ctime;
    return st;
}

struct stat filesystem::getattr(std::uint64_t node) {
    auto p = nodes_.path_of(node);
    auto f = nodes_.file_of(node);
    if (!p) {
        // Unlinked while open: what the open file holds.
        if (!f) throw store::store_error(ENOENT, "no such file");
        struct stat st {};
        st.st_ino = node;
        st.st_mode = S_IFREG | 0644;
        st.st_nlink = 0;
        std::shared_lock lock(f->mutex);
        st.st_size = f->writer      ? static_cast<off_t>(f->writer->size())
                     : f->committed ? static_cast<off_t>(f->committed->size())
                                    : 0;
        return st;
    }
    auto st = to_stat(node, store_.stat(*p));
    if (f) {
        std::shared_lock lock(f->mutex);
        if (f->writer) st.st_size = static_cast<off_t>(f->writer->size());
    }
    return st;
}

entry filesystem::lookup(std::uint64_t parent, const std::string& name) {
    auto p = nodes_.child_path(parent, name);
    auto fst = store_.stat(p);
    auto node = nodes_.lookup(p);
    auto st = to_stat(node, fst);
    if (auto f = nodes_.file_of(node)) {
        std::shared_lock lock(f->mutex);
        if (f->writer) st.st_size = static_cast<off_t>(f->writer->size());
    }
    return {node, st};
}

entry filesystem::lookup_listed(std::uint64_t dir, const store::dir_entry& e) {
    return lookup(dir, e.name);
}

struct stat filesystem::setattr(std::uint64_t node, const attr_change& change, handle* h) {
    auto p = path(node);
    if (change.mode) store_.chmod(p, *change.mode & 07777);
    if (change.uid || change.gid) {
        auto cur = store_.stat(p);
        if ((change.uid && *change.uid != cur.uid) || (change.gid && *change.gid != cur.gid))
            throw store::store_error(EPERM, "changing owners is not supported");
    }
    if (change.atime || change.mtime) store_.utimens(p, change.atime, change.mtime);
    if (change.size) {
        auto f = h ? h->file : nodes_.file_of(node);
        bool done = false;
        if (f) {
            std::unique_lock lock(f->mutex);
            if (f->writer) {
                f->writer->truncate(*change.size);
                done = true;
            }
        }
        if (!done) store_.truncate(p, *change.size);
    }
    return getattr(node);
}

entry filesystem::mkdir(std::uint64_t parent, const std::string& name, mode_t mode) {
    store_.mkdir(nodes_.child_path(parent, name), mode & 07777);
    return lookup(parent, name);
}

void filesystem::rmdir(std::uint64_t parent, const std::string& name) {
    auto p = nodes_.child_path(parent, name);
    store_.rmdir(p);
    nodes_.unlinked(p);
}

void filesystem::unlink(std::uint64_t parent, const std::string& name) {
    auto p = nodes_.child_path(parent, name);
    store_.unlink(p);
    nodes_.unlinked(p);
}

void filesystem::rename(std::uint64_t parent, const std::string& name, std::uint64_t new_parent,
                        const std::string& new_name, unsigned flags) {
    auto from = nodes_.child_path(parent, name);
    auto to = nodes_.child_path(new_parent, new_name);
    // Files being written below `from` commit under their new path: hold them still while
    // the namespace moves, so no commit can land in between under the old one.
    auto open = nodes_.files_under(from);
    if (flags & RENAME_EXCHANGE) {
        auto more = nodes_.files_under(to);
        open.insert(open.end(), more.begin(), more.end());
    }
    std::sort(open.begin(), open.end(),
              [](auto& a, auto& b) { return a.second.get() < b.second.get(); });
    open.erase(std::unique(open.begin(), open.end(),
                           [](auto& a, auto& b) { return a.second == b.second; }),
               open.end());
    std::vector<std::unique_lock<std::shared_mutex>> locks;
    for (auto& [id, f] : open) locks.emplace_back(f->mutex);
    store_.rename(from, to, flags);
    if (flags & RENAME_EXCHANGE)
        nodes_.exchanged(from, to);
    else
        nodes_.moved(from, to);
    for (auto& [id, f] : open)
        if (f->writer)
            if (auto np = nodes_.path_of(id)) f->writer->set_path(*np);
}

entry filesystem::symlink(const std::string& target, std::uint64_t parent,
                          const std::string& name) {
    store_.symlink(target, nodes_.child_path(parent, name));
    return lookup(parent, name);
}

std::string filesystem::readlink(std::uint64_t node) {
    return store_.readlink(path(node));
}

void filesystem::forget(std::uint64_t node, std::uint64_t n) {
    if (!nodes_.forget(node, n)) return;
    std::lock_guard files(files_mutex_); // node ids are never reused: its entry is dead
    cached_version_.erase(node);
}

std::shared_ptr<open_file> filesystem::attach(std::uint64_t node) {
    std::lock_guard lock(files_mutex_);
    auto f = nodes_.file_of(node);
    if (!f) {
        f = std::make_shared<open_file>();
        nodes_.set_file(node, f);
    }
    f->handles++;
    return f;
}

void filesystem::detach(std::uint64_t node, const std::shared_ptr<open_file>& f) {
    std::lock_guard lock(files_mutex_);
    if (--f->handles == 0) nodes_.set_file(node, nullptr);
}

std::unique_ptr<handle> filesystem::open(std::uint64_t node, int flags, bool& keep_cache) {
    auto p = path(node);
    auto st = store_.stat(p);
    if (st.type == store::entry_type::directory)
        throw store::store_error(EISDIR, p + ": is a directory");
    keep_cache = false;
    auto h = std::make_unique<handle>();
    h->node = node;
    h->writes = (flags & O_ACCMODE) != O_RDONLY;
    h->append = flags & O_APPEND;
    h->file = attach(node);
    try {
        std::unique_lock lock(h->file->mutex);
        if (h->writes) {
            if (!h->file->writer)
                h->file->writer = store_.open_writer(p, flags & O_TRUNC);
            else if (flags & O_TRUNC)
                h->file->writer->truncate(0);
            h->file->writing_handles++;
            keep_cache = false;
        } else {
            // A snapshot now, even while another handle writes: the name may be gone by the
            // time this handle reads (unlinked while open).
            h->reader = store_.open_reader(p);
            if (!h->file->committed) h->file->committed = h->reader;
            if (!h->file->writer) {
                // Pages the kernel cached stay valid while the same version is opened again.
                std::lock_guard files(files_mutex_);
                auto& cached = cached_version_[node];
                keep_cache = cached == st.version;
                cached = st.version;
            }
        }
    } catch (...) {
        detach(node, h->file);
        throw;
    }
    return h;
}

std::pair<entry, std::unique_ptr<handle>>
filesystem::create(std::uint64_t parent, const std::string& name, mode_t mode, int flags) {
    auto p = nodes_.child_path(parent, name);
    store_.create(p, mode & 07777, flags & O_EXCL);
    auto e = lookup(parent, name);
    bool keep = false;
    try {
        auto h = open(e.node, flags, keep);
        return {e, std::move(h)};
    } catch (...) {
        nodes_.forget(e.node, 1);
        throw;
    }
}

std::size_t filesystem::read(handle& h, std::uint64_t offset, std::span<std::byte> out) {
    std::size_t n = 0;
    {
        // The common case, a committed file: readers run in parallel.
        std::shared_lock lock(h.file->mutex);
        if (!h.file->writer) {
            auto& r = h.file->committed ? h.file->committed : h.reader;
            n = r->read(offset, out);
            bytes_read_ += n;
            return n;
        }
    }
    std::unique_lock lock(h.file->mutex);
    if (h.file->writer)
        n = h.file->writer->read(offset, out);
    else
        n = (h.file->committed ? h.file->committed : h.reader)->read(offset, out);
    bytes_read_ += n;
    return n;
}

std::size_t filesystem::write(handle& h, std::uint64_t offset, std::span<const std::byte> in) {
    if (!h.writes) throw store::store_error(EBADF, "file not open for writing");
    std::unique_lock lock(h.file->mutex);
    if (!h.file->writer) throw store::store_error(EBADF, "file not open for writing");
    if (h.append) offset = h.file->writer->size();
    h.file->writer->write(offset, in);
    bytes_written_ += in.size();
    return in.size();
}

void filesystem::commit_locked(std::uint64_t node, open_file& f) {
    if (!f.writer || !f.writer->dirty()) return;
    {
        // The kernel's cached pages may predate this version: the next open drops them.
        std::lock_guard files(files_mutex_);
        cached_version_.erase(node);
    }
    auto p = nodes_.path_of(node);
    if (!f.writer->commit() || !p) {
        spdlog::debug("{}: not committed: the file was unlinked or replaced while open",
                      p.value_or("(unlinked)"));
        return;
    }
    if (f.handles == f.writing_handles) {
        // No read handle to move to the new version; one opened later takes its own snapshot.
        f.committed.reset();
        return;
    }
    try {
        f.committed = store_.open_reader(*p);
    } catch (const store::store_error&) {
        f.committed.reset(); // renamed or removed meanwhile: handles keep their snapshots
    }
}

void filesystem::flush(handle& h) {
    if (!h.writes) return;
    std::unique_lock lock(h.file->mutex);
    commit_locked(h.node, *h.file);
}

void filesystem::release(std::unique_ptr<handle> h) {
    if (h->writes) {
        std::unique_lock lock(h->file->mutex);
        if (--h->file->writing_handles == 0 && h->file->writer) {
            try {
                commit_locked(h->node, *h->file);
            } catch (const std::exception& e) {
                // release has no caller to tell: flush already reported this to close().
                spdlog::error("commit on release of {}: {}", describe(h->node), e.what());
            }
            h->file->writer.reset();
        }
    }
    detach(h->node, h->file);
}

dir_listing filesystem::opendir(std::uint64_t node) {
    auto p = path(node);
    dir_listing l;
    l.entries.push_back({".", store::entry_type::directory});
    l.entries.push_back({"..", store::entry_type::directory});
    for (auto& e : store_.list(p)) l.entries.push_back(std::move(e));
    return l;
}

std::vector<std::byte> filesystem::virtual_xattr(std::uint64_t node, const std::string& name) {
    auto p = path(node);
    auto attr = name.substr(std::string(virtual_prefix).size());
    if (p.empty()) {
        if (attr == "stats") return text_bytes(stats_json());
        if (attr == "maintenance_pending")
            return text_bytes(std::to_string(store_.counters().maintenance_pending));
        throw store::store_error(ENODATA, "no attribute " + name);
    }
    if (store_.stat(p).type != store::entry_type::file)
        throw store::store_error(ENODATA, "no attribute " + name);
    auto v = store_.info(p);
    std::string out;
    if (attr == "stored_size")
        out = std::to_string(v.stored_bytes);
    else if (attr == "logical_size")
        out = std::to_string(v.logical_size);
    else if (attr == "ratio")
        out = v.stored_bytes
                  ? fmt::format("{:.4f}", double(v.logical_size) / double(v.stored_bytes))
                  : "0";
    else if (attr == "parent")
        out = v.base_path;
    else if (attr == "chain")
        out = v.chain_key;
    else if (attr == "depth")
        out = std::to_string(v.depth);
    else if (attr == "version")
        out = v.version;
    else if (attr == "changed_fraction" || attr == "sparsity")
        out = v.elements ? fmt::format("{:.4f}", double(v.changed) / double(v.elements)) : "";
    else
        throw store::store_error(ENODATA, "no attribute " + name);
    return text_bytes(out);
}

// The kernel asks for this one before every write request (to drop file capabilities on a
// write); tpdefs keeps none, so it answers without a system call on the store, and refuses
// to set one.
constexpr std::string_view file_capabilities = "security.capability";

std::vector<std::byte> filesystem::getxattr(std::uint64_t node, const std::string& name) {
    if (name.rfind(virtual_prefix, 0) == 0) return virtual_xattr(node, name);
    if (name == file_capabilities) throw store::store_error(ENODATA, "no file capabilities");
    return store_.getxattr(path(node), name);
}

void filesystem::setxattr(std::uint64_t node, const std::string& name,
                          std::span<const std::byte> value, int flags) {
    if (name.rfind(virtual_prefix, 0) == 0)
        throw store::store_error(EPERM, name + " is maintained by tpdefs (read-only)");
    if (name == file_capabilities)
        throw store::store_error(ENOTSUP, "tpdefs does not keep file capabilities");
    store_.setxattr(path(node), name, value, flags);
}

std::vector<std::string> filesystem::listxattr(std::uint64_t node) {
    auto p = path(node);
    auto names = store_.listxattr(p);
    // Stored attributes of those names (copied in from elsewhere) are hidden by the virtual ones.
    names.erase(std::remove_if(names.begin(), names.end(), is_virtual), names.end());
    if (p.empty()) {
        for (auto a : root_attributes) names.push_back(virtual_prefix + std::string(a));
    } else if (store_.stat(p).type == store::entry_type::file) {
        for (auto a : file_attributes) names.push_back(virtual_prefix + std::string(a));
    }
    return names;
}

void filesystem::removexattr(std::uint64_t node, const std::string& name) {
    if (name.rfind(virtual_prefix, 0) == 0)
        throw store::store_error(EPERM, name + " is maintained by tpdefs (read-only)");
    store_.removexattr(path(node), name);
}

std::string filesystem::stats_json() {
    auto c = store_.counters();
    auto k = store_.cache_counters();
    std::uint64_t files = 0, logical = 0;
    add_usage(store_, "", files, logical);
    nlohmann::json j{
        {"store", std::filesystem::absolute(store_.root()).string()},
        {"files", files},
        {"logical_bytes", logical},
        {"bytes_written_to_mount", bytes_written_.load()},
        {"bytes_read_from_mount", bytes_read_.load()},
        {"commits", c.commits},
        {"bytes_committed", c.bytes_committed},
        {"object_bytes_written", c.bytes_written},
        {"stored_bytes", store_.stored_bytes()},
        {"reencodes", c.reencodes},
        {"versions_freed", c.versions_freed},
        {"bytes_freed", c.bytes_freed},
        {"frames_decoded", c.frames_decoded},
        {"maintenance_pending", c.maintenance_pending},
        {"compressions_waiting_for_idle", c.compressions_waiting},
        {"cache",
         {{"hits", k.hits},
          {"misses", k.misses},
          {"decodes", k.decodes},
          {"decode_seconds", double(k.decode_ns) / 1e9},
          {"bytes", k.bytes_cached},
          {"max_bytes", store_.options().cache.max_bytes}}},
    };
    return j.dump() + "\n";
}

void filesystem::shutdown() {
    for (auto& [node, f] : nodes_.all_files()) {
        std::unique_lock lock(f->mutex);
        try {
            commit_locked(node, *f);
        } catch (const std::exception& e) {
            spdlog::error("commit at unmount of {}: {}", describe(node), e.what());
        }
    }
    store_.wait_idle();
}

} // namespace tpde::fs

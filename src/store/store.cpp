// The store's namespace and files: POSIX operations on paths, mapped onto the mirrored
// namespace under ns/ and the chains' versions.
#include <algorithm>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "maintenance.hpp"
#include "store_impl.hpp"

namespace tpde::store {

std::string parent_rel(const std::string& rel) {
    auto slash = rel.rfind('/');
    return slash == std::string::npos ? "." : rel.substr(0, slash);
}

std::string ns_rel(const std::string& path) {
    if (path.empty()) return ".";
    if (path.front() == '/' || path.back() == '/')
        throw store_error(EINVAL, "invalid path '" + path + "'");
    std::size_t start = 0;
    while (start <= path.size()) {
        auto end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        auto part = std::string_view(path).substr(start, end - start);
        if (part.empty() || part == "." || part == "..")
            throw store_error(EINVAL, "invalid path '" + path + "'");
        if (part.size() > 255) throw store_error(ENAMETOOLONG, "name too long in '" + path + "'");
        start = end + 1;
    }
    return path;
}

void store_impl::check_writable() const {
    if (ctx_.opts.read_only) throw store_error(EROFS, "store is read-only");
}

std::optional<version_record> store_impl::read_record(const std::string& rel,
                                                      const std::string& path, struct stat& st) {
    for (int attempt = 1;; ++attempt) {
        if (!sys::stat_at(ctx_.ns_dir.get(), rel, st))
            throw store_error(ENOENT, path + ": no such file");
        if (!S_ISREG(st.st_mode)) return std::nullopt;
        // Content and attributes through one descriptor: both of the same version.
        int f = ::openat(ctx_.ns_dir.get(), rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (f < 0) {
            // Renamed over on another host between the stat and the open: GlusterFS answers
            // ENOENT (or ESTALE) for a moment although the name never went away.
            if ((errno == ENOENT || errno == ESTALE) && attempt < 4) {
                ::usleep(1000u * attempt);
                continue;
            }
            sys::fail("cannot open", full(path));
        }
        sys::fd guard(f);
        if (::fstat(f, &st) != 0) sys::fail("cannot stat", full(path));
        std::string text;
        try {
            text = sys::read_small_fd(f, full(path));
        } catch (const store_error& e) {
            if (e.error_number() == EFBIG)
                throw corrupt_store(full(path) + ": record larger than 1 MiB");
            throw;
        }
        return parse_record(text, full(path));
    }
}

version_record store_impl::record_at(const std::string& path, struct stat* stp) {
    auto rel = ns_rel(path);
    struct stat st {};
    auto rec = read_record(rel, path, st);
    if (!rec) {
        if (S_ISDIR(st.st_mode)) throw store_error(EISDIR, path + ": is a directory");
        throw store_error(EINVAL, path + ": not a regular file");
    }
    if (stp) *stp = st;
    return *rec;
}

file_stat store_impl::stat(const std::string& path) {
    auto rel = ns_rel(path);
    struct stat st {};
    auto rec = read_record(rel, path, st);
    file_stat f;
    f.ino = st.st_ino;
    f.mode = st.st_mode & 07777;
    f.atime = st.st_atim;
    f.mtime = st.st_mtim;
    f.ctime = st.st_ctim;
    f.uid = st.st_uid;
    f.gid = st.st_gid;
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.stored_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode)) {
        f.type = entry_type::directory;
    } else if (S_ISLNK(st.st_mode)) {
        f.type = entry_type::symlink;
    } else if (rec) {
        f.type = entry_type::file;
        f.size = rec->size;
        f.version = rec->version;
        struct stat obj {};
        f.stored_bytes =
            sys::stat_at(ctx_.chains_dir.get(), rec->chain_id + "/objects/" + rec->version, obj)
                ? static_cast<std::uint64_t>(obj.st_size)
                : 0;
    }
    return f;
}

std::vector<dir_entry> store_impl::list(const std::string& dir) {
    auto rel = ns_rel(dir);
    auto d = sys::open_at(ctx_.ns_dir.get(), rel, O_RDONLY | O_DIRECTORY, 0, full(dir));
    std::vector<dir_entry> out;
    for (auto& item : sys::list_dir_typed(d.get(), ".")) {
        unsigned char t = item.type;
        if (t == DT_UNKNOWN) {
            struct stat st {};
            if (!sys::stat_at(d.get(), item.name, st)) continue;
            t = S_ISDIR(st.st_mode)   ? DT_DIR
                : S_ISREG(st.st_mode) ? DT_REG
                : S_ISLNK(st.st_mode) ? DT_LNK
                                      : DT_UNKNOWN;
        }
        auto type = t == DT_DIR   ? entry_type::directory
                    : t == DT_REG ? entry_type::file
                    : t == DT_LNK ? entry_type::symlink
                                  : entry_type::other;
        out.push_back({std::move(item.name), type});
    }
    return out;
}

void store_impl::mkdir(const std::string& path, std::uint32_t mode) {
    check_writable();
    auto rel = ns_rel(path);
    sys::mutation_point();
    if (::mkdirat(ctx_.ns_dir.get(), rel.c_str(), mode & 07777) != 0)
        sys::fail("cannot create directory", path);
    if (::fchmodat(ctx_.ns_dir.get(), rel.c_str(), mode & 07777, 0) != 0)
        sys::fail("cannot chmod", path);
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rel), full(path));
}

void store_impl::rmdir(const std::string& path) {
    check_writable();
    if (path.empty()) throw store_error(EBUSY, "cannot remove the root");
    sys::unlink_at(ctx_.ns_dir.get(), ns_rel(path), AT_REMOVEDIR, path);
}

void store_impl::unlink(const std::string& path) {
    check_writable();
    auto rel = ns_rel(path);
    std::string chain_id;
    {
        std::lock_guard lock(ns_mutex_);
        ns_locks::guard across_hosts(ns_locks_, {rel});
        struct stat st {};
        if (!sys::stat_at(ctx_.ns_dir.get(), rel, st))
            throw store_error(ENOENT, path + ": no such file");
        if (S_ISDIR(st.st_mode)) throw store_error(EISDIR, path + ": is a directory");
        if (S_ISREG(st.st_mode)) {
            try {
                chain_id = record_at(path).chain_id;
            } catch (const corrupt_store& e) {
                spdlog::warn("{} (removing it anyway)", e.what());
            }
        }
        sys::unlink_at(ctx_.ns_dir.get(), rel, 0, path);
    }
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rel), full(path));
    if (!chain_id.empty()) maintenance_->schedule({maintenance_task::kind::collect, chain_id, {}});
}

void store_impl::rename(const std::string& from, const std::string& to, unsigned flags) {
    check_writable();
    auto rf = ns_rel(from), rt = ns_rel(to);
    if (from.empty() || to.empty()) throw store_error(EBUSY, "cannot rename the root");
    std::string replaced_chain;
    {
        std::lock_guard lock(ns_mutex_);
        ns_locks::guard across_hosts(ns_locks_, {rf, rt});
        struct stat a {
        }, b{};
        if (!sys::stat_at(ctx_.ns_dir.get(), rf, a))
            throw store_error(ENOENT, from + ": no such file");
        if (!(flags & RENAME_EXCHANGE) && sys::stat_at(ctx_.ns_dir.get(), rt, b) &&
            S_ISREG(b.st_mode) && b.st_ino != a.st_ino) {
            try {
                replaced_chain = record_at(to).chain_id;
            } catch (const corrupt_store&) {
            }
        }
        try {
            sys::rename_at(ctx_.ns_dir.get(), rf, ctx_.ns_dir.get(), rt, flags, from + " -> " + to);
        } catch (const store_error& e) {
            // GlusterFS refuses RENAME_NOREPLACE (EINVAL). For a file, link then unlink does
            // the same (link fails if the name exists), and the namespace locks held here keep
            // other hosts' renames of these paths out of the gap between the two.
            if (e.error_number() != EINVAL || flags != RENAME_NOREPLACE || !S_ISREG(a.st_mode))
                throw;
            sys::link_at(ctx_.ns_dir.get(), rf, ctx_.ns_dir.get(), rt, from + " -> " + to);
            sys::unlink_at(ctx_.ns_dir.get(), rf, 0, from);
        }
    }
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rt), full(to));
    if (parent_rel(rt) != parent_rel(rf))
        sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rf), full(from));
    if (!replaced_chain.empty())
        maintenance_->schedule({maintenance_task::kind::collect, replaced_chain, {}});
}

void store_impl::symlink(const std::string& target, const std::string& path) {
    check_writable();
    auto rel = ns_rel(path);
    sys::mutation_point();
    if (::symlinkat(target.c_str(), ctx_.ns_dir.get(), rel.c_str()) != 0)
        sys::fail("cannot create symlink", path);
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rel), full(path));
}

std::string store_impl::readlink(const std::string& path) {
    auto rel = ns_rel(path);
    std::vector<char> buf(4096);
    auto n = ::readlinkat(ctx_.ns_dir.get(), rel.c_str(), buf.data(), buf.size());
    if (n < 0) sys::fail("cannot read link", path);
    return std::string(buf.data(), static_cast<std::size_t>(n));
}

void store_impl::chmod(const std::string& path, std::uint32_t mode) {
    check_writable();
    sys::mutation_point();
    if (::fchmodat(ctx_.ns_dir.get(), ns_rel(path).c_str(), mode & 07777, 0) != 0)
        sys::fail("cannot chmod", path);
}

void store_impl::utimens(const std::string& path, std::optional<timespec> atime,
                         std::optional<timespec> mtime) {
    check_writable();
    timespec ts[2];
    ts[0] = atime ? *atime : timespec{0, UTIME_OMIT};
    ts[1] = mtime ? *mtime : timespec{0, UTIME_OMIT};
    sys::mutation_point();
    if (::utimensat(ctx_.ns_dir.get(), ns_rel(path).c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0)
        sys::fail("cannot set times of", path);
}

void store_impl::truncate(const std::string& path, std::uint64_t size) {
    check_writable();
    auto w = open_writer(path, size == 0);
    w->truncate(size);
    w->commit();
}

std::vector<std::byte> store_impl::getxattr(const std::string& path, const std::string& name) {
    auto p = full(ns_rel(path) == "." ? "" : path);
    for (;;) {
        auto n = ::lgetxattr(p.c_str(), name.c_str(), nullptr, 0);
        if (n < 0) sys::fail("cannot get attribute " + name + " of", path);
        std::vector<std::byte> v(static_cast<std::size_t>(n));
        auto m = ::lgetxattr(p.c_str(), name.c_str(), v.data(), v.size());
        if (m < 0 && errno == ERANGE) continue; // grew meanwhile
        if (m < 0) sys::fail("cannot get attribute " + name + " of", path);
        v.resize(static_cast<std::size_t>(m));
        return v;
    }
}

void store_impl::setxattr(const std::string& path, const std::string& name,
                          std::span<const std::byte> value, int flags) {
    check_writable();
    ns_rel(path);
    sys::mutation_point();
    if (::lsetxattr(full(path).c_str(), name.c_str(), value.data(), value.size(), flags) != 0)
        sys::fail("cannot set attribute " + name + " of", path);
}

std::vector<std::string> store_impl::listxattr(const std::string& path) {
    ns_rel(path);
    auto p = full(path);
    for (;;) {
        auto n = ::llistxattr(p.c_str(), nullptr, 0);
        if (n < 0) sys::fail("cannot list attributes of", path);
        std::vector<char> buf(static_cast<std::size_t>(n));
        auto m = ::llistxattr(p.c_str(), buf.data(), buf.size());
        if (m < 0 && errno == ERANGE) continue;
        if (m < 0) sys::fail("cannot list attributes of", path);
        std::vector<std::string> names;
        for (std::size_t i = 0; i < static_cast<std::size_t>(m);) {
            std::string s(buf.data() + i);
            i += s.size() + 1;
            names.push_back(std::move(s));
        }
        return names;
    }
}

void store_impl::removexattr(const std::string& path, const std::string& name) {
    check_writable();
    ns_rel(path);
    sys::mutation_point();
    if (::lremovexattr(full(path).c_str(), name.c_str()) != 0)
        sys::fail("cannot remove attribute " + name + " of", path);
}

struct statvfs store_impl::statfs() {
    struct statvfs v {};
    if (::fstatvfs(ctx_.root_dir.get(), &v) != 0) sys::fail("cannot statfs", ctx_.root.string());
    return v;
}

void store_impl::create(const std::string& path, std::uint32_t mode, bool exclusive) {
    check_writable();
    auto rel = ns_rel(path);
    struct stat st {};
    if (sys::stat_at(ctx_.ns_dir.get(), rel, st)) {
        if (exclusive) throw store_error(EEXIST, path + ": file exists");
        if (S_ISDIR(st.st_mode)) throw store_error(EISDIR, path + ": is a directory");
        return;
    }
    object_encoder enc(ctx_, full(path));
    enc.finish(format::generic_layout(0), "", 0);
    if (publish_new(path, "", enc, 0, mode).empty() && exclusive)
        throw store_error(EEXIST, path + ": file exists");
}

std::unique_ptr<file_writer> store_impl::open_writer(const std::string& path, bool truncate) {
    check_writable();
    struct stat st {};
    auto rec = record_at(path, &st);
    auto current = truncate || rec.size == 0 ? nullptr : open_version_of(path);
    return std::make_unique<store_file_writer>(ctx_, *this, path, rec.version, std::move(current),
                                               truncate && rec.size > 0);
}

std::shared_ptr<const version_reader> store_impl::open_version_of(const std::string& path) {
    auto rec = record_at(path);
    chain c(ctx_, rec.chain_id);
    chain_lock lock(c.dir(), false);
    struct stat st {};
    // Unlinked and collected between reading the record and taking the lock.
    if (!sys::stat_at(c.versions(), rec.version, st))
        throw store_error(ENOENT, path + ": no such file");
    return c.open_version(rec.version, path);
}

std::unique_ptr<file_reader> store_impl::open_reader(const std::string& path) {
    struct shared_reader : file_reader {
        std::shared_ptr<const version_reader> r;
        std::uint64_t size() const override { return r->size(); }
        std::size_t read(std::uint64_t offset, std::span<std::byte> out) const override {
            return r->read(offset, out);
        }
    };
    auto out = std::make_unique<shared_reader>();
    out->r = open_version_of(path);
    return out;
}

version_info store_impl::info(const std::string& path) {
    auto rec = record_at(path);
    chain c(ctx_, rec.chain_id);
    auto r = open_version_of(path);
    version_info v;
    v.chain_key = c.key();
    v.chain_id = rec.chain_id;
    v.version = rec.version;
    v.base = r->footer().base_version;
    if (!v.base.empty()) {
        try {
            v.base_path = c.record(v.base).path;
        } catch (const store_error&) {
        }
    }
    v.depth = r->depth();
    v.logical_size = rec.size;
    v.stored_bytes = r->object().file_size();
    v.blocks = r->footer().blocks.size();
    v.elements = r->footer().elements;
    v.changed = r->footer().changed;
    return v;
}

store_counters store_impl::counters() const {
    auto c = ctx_.counters.snapshot();
    c.maintenance_pending = maintenance_->pending();
    c.compressions_waiting = maintenance_->deferred_compressions();
    return c;
}

void store_impl::wait_idle() {
    maintenance_->wait_idle();
}

void store_impl::collect_garbage() {
    check_writable();
    wait_idle();
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) {
        chain c(ctx_, id);
        chain_work_lock work(c.dir(), true);
        collect_chain(ctx_, c);
    }
}

std::uint64_t store_impl::stored_bytes() {
    std::uint64_t total = 0;
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) {
        chain c(ctx_, id);
        for (auto& o : sys::list_dir(c.objects(), ".")) {
            struct stat st {};
            if (sys::stat_at(c.objects(), o, st)) total += static_cast<std::uint64_t>(st.st_size);
        }
    }
    return total;
}

} // namespace tpde::store

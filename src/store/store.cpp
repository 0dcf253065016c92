#include <algorithm>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

#include "store/maintenance.hpp"
#include "store/store_impl.hpp"

namespace fs = std::filesystem;

namespace tpde::store {
namespace {

constexpr const char* marker_name = "tpdefs-store";
constexpr int store_format_version = 1;

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

std::string parent_rel(const std::string& rel) {
    auto slash = rel.rfind('/');
    return slash == std::string::npos ? "." : rel.substr(0, slash);
}

// Removes a leftover under tmp/: a file, or a directory of files (an unfinished chain).
void remove_leftover(int dirfd, const std::string& name) {
    struct stat st {};
    if (!sys::stat_at(dirfd, name, st)) return;
    if (S_ISDIR(st.st_mode)) {
        auto d = sys::open_at(dirfd, name, O_RDONLY | O_DIRECTORY, 0, name);
        for (auto& n : sys::list_dir(d.get(), ".")) remove_leftover(d.get(), n);
        sys::unlink_at(dirfd, name, AT_REMOVEDIR, name);
    } else {
        sys::unlink_at(dirfd, name, 0, name);
    }
}

} // namespace

std::string chain_key_for(const std::string& path) {
    std::string key;
    for (std::size_t i = 0; i < path.size(); ++i) {
        if (std::isdigit(static_cast<unsigned char>(path[i]))) {
            while (i + 1 < path.size() && std::isdigit(static_cast<unsigned char>(path[i + 1])))
                ++i;
            key += '#';
        } else {
            key += path[i];
        }
    }
    return key;
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

namespace {
thread_local bool background_thread = false;

// A process that just unmounted may still be finishing its last commits and releasing the
// store (`fusermount3 -u m && tpdefs s m` in a script): wait a little for the lock before
// calling the store in use.
bool take_store_lock(int fd, int how) {
    using namespace std::chrono_literals;
    const auto give_up = std::chrono::steady_clock::now() + 3s;
    for (;;) {
        if (::flock(fd, how | LOCK_NB) == 0) return true;
        if (errno != EWOULDBLOCK && errno != EINTR) return false;
        if (std::chrono::steady_clock::now() >= give_up) return false;
        std::this_thread::sleep_for(50ms);
    }
}
} // namespace
void store_context::mark_background_thread() {
    background_thread = true;
}

util::thread_pool* store_context::pool_for_this_thread() const {
    return background_thread && background_pool ? background_pool.get() : pool.get();
}

std::string store_context::tmp_name(const char* what) const {
    return fmt::format("{}-{}-{:016x}", what, ::getpid(), new_object_uid());
}

void store::init(const fs::path& root) {
    std::error_code ec;
    if (fs::exists(root, ec)) {
        if (!fs::is_directory(root, ec))
            throw store_error(ENOTDIR, root.string() + " exists and is not a directory");
        if (!fs::is_empty(root, ec)) {
            // An init stopped before its marker leaves only empty ns/ chains/ tmp/: finish it.
            // Anything else is somebody's data.
            bool unfinished_init = !fs::exists(root / marker_name);
            for (auto& e : fs::directory_iterator(root, ec)) {
                auto n = e.path().filename().string();
                if ((n != "ns" && n != "chains" && n != "tmp") || !fs::is_directory(e.path()) ||
                    !fs::is_empty(e.path()))
                    unfinished_init = false;
            }
            if (!unfinished_init)
                throw store_error(EEXIST, root.string() +
                                              " is not empty: a store needs an empty directory");
            for (auto d : {"ns", "chains", "tmp"}) fs::remove(root / d, ec);
        }
    } else if (!fs::create_directories(root, ec)) {
        throw store_error(ec.value(),
                          fmt::format("cannot create {}: {}", root.string(), ec.message()));
    }
    auto dir = sys::open_dir(root.string());
    for (auto d : {"ns", "chains", "tmp"})
        if (::mkdirat(dir.get(), d, 0755) != 0) sys::fail("cannot create", (root / d).string());
    nlohmann::json marker{{"format", "tpdefs-store"}, {"version", store_format_version}};
    auto text = marker.dump() + "\n";
    auto tmp = sys::open_at(dir.get(), "tmp/marker", O_WRONLY | O_CREAT | O_TRUNC, 0644,
                            (root / "tmp/marker").string());
    sys::write_all(tmp.get(), std::as_bytes(std::span(text)), (root / marker_name).string());
    sys::fsync_fd(tmp.get(), (root / marker_name).string());
    sys::rename_at(dir.get(), "tmp/marker", dir.get(), marker_name, 0,
                   (root / marker_name).string());
    sys::fsync_fd(dir.get(), root.string());
}

std::unique_ptr<store> store::open(const fs::path& root, const store_options& opts,
                                   recovery_report* report) {
    std::error_code ec;
    if (!opts.read_only && !fs::exists(root / marker_name, ec)) {
        try {
            init(root); // a missing or empty directory, or an init that did not finish
        } catch (const store_error& e) {
            if (e.error_number() != EEXIST) throw;
            throw store_error(ENOENT, fmt::format("{} is not a tpdefs store (no {} file) and not "
                                                  "empty: give an empty directory for a new store",
                                                  root.string(), marker_name));
        }
    }
    auto s = std::make_unique<store_impl>(root, opts);
    if (!opts.read_only) s->recover(report);
    return s;
}

store_impl::store_impl(const fs::path& root, const store_options& opts) : ctx_(root, opts) {
    std::string marker;
    try {
        marker = sys::read_small_file(AT_FDCWD, (root / marker_name).string(), root.string());
    } catch (const store_error& e) {
        if (e.error_number() == ENOENT)
            throw store_error(ENOENT, fmt::format("{} is not a tpdefs store (no {} file)",
                                                  root.string(), marker_name));
        throw;
    }
    try {
        auto j = nlohmann::json::parse(marker);
        if (j.at("format") != "tpdefs-store") throw std::runtime_error("wrong format name");
        if (j.at("version").get<int>() != store_format_version)
            throw store_error(EPROTO,
                              fmt::format("{}: store format version {}, this tpdefs reads {}",
                                          root.string(), j.at("version").get<int>(),
                                          store_format_version));
    } catch (const store_error&) {
        throw;
    } catch (const std::exception& e) {
        throw corrupt_store(
            fmt::format("{}/{} is damaged: {}", root.string(), marker_name, e.what()));
    }
    ctx_.root_dir = sys::open_dir(root.string());
    ctx_.ns_dir = sys::open_dir((root / "ns").string());
    ctx_.chains_dir = sys::open_dir((root / "chains").string());
    ctx_.tmp_dir = sys::open_dir((root / "tmp").string());
    // One process at a time: recovery deletes tmp/, which would be another's work in progress.
    int lf = ::openat(ctx_.root_dir.get(), "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lf < 0) sys::fail("cannot open", (root / "lock").string());
    lock_file_ = sys::fd(lf);
    if (!take_store_lock(lf, opts.read_only ? LOCK_SH : LOCK_EX)) {
        char buf[32] = {};
        auto n = ::pread(lf, buf, sizeof buf - 1, 0);
        std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
        while (!holder.empty() && (holder.back() == '\n')) holder.pop_back();
        // The pid is the last writable opener's: name it only while that process lives.
        bool alive = !holder.empty() && fs::exists("/proc/" + holder);
        throw store_error(EBUSY, fmt::format("store {} is in use by another process{}; "
                                             "unmount it or stop that process first",
                                             root.string(), alive ? " (pid " + holder + ")" : ""));
    }
    if (!opts.read_only) {
        auto pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(lf, 0) == 0) (void)!::pwrite(lf, pid.data(), pid.size(), 0);
    }
    if (opts.encode_threads > 1)
        ctx_.pool = std::make_unique<util::thread_pool>(opts.encode_threads);
    if (opts.background_maintenance) {
        constexpr int background_nice = 10;
        ctx_.background_pool =
            std::make_unique<util::thread_pool>(std::max(1u, opts.encode_threads), background_nice);
        worker_ = std::thread([this] {
            store_context::mark_background_thread();
            util::lower_this_thread_priority(background_nice);
            maintenance_loop();
        });
    }
}

store_impl::~store_impl() {
    if (worker_.joinable()) {
        {
            std::lock_guard lock(tasks_mutex_);
            stopping_ = true;
        }
        tasks_cv_.notify_all();
        worker_.join();
    }
}

void store_impl::recover(recovery_report* report) {
    std::vector<std::string> removed;
    for (auto& name : sys::list_dir(ctx_.tmp_dir.get(), ".")) {
        remove_leftover(ctx_.tmp_dir.get(), name);
        removed.push_back("tmp/" + name + " (unfinished write)");
    }
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) {
        try {
            chain c(ctx_, id);
            auto versions = sys::list_dir(c.versions(), ".");
            std::set<std::string> known(versions.begin(), versions.end());
            for (auto& obj : sys::list_dir(c.objects(), "."))
                if (!known.count(obj)) {
                    sys::unlink_at(c.objects(), obj, 0, c.shown("objects/" + obj));
                    removed.push_back("chains/" + id + "/objects/" + obj + " (never committed)");
                }
            auto before = ctx_.counters.versions_freed.load();
            collect_chain(ctx_, c);
            // A stop between a commit and its compaction left a standalone predecessor.
            relink_chain(ctx_, c);
            compress_uncompressed(ctx_, c);
            auto freed = ctx_.counters.versions_freed.load() - before;
            if (freed)
                removed.push_back(
                    fmt::format("chains/{}: {} version(s) no file names any more", id, freed));
        } catch (const store_error& e) {
            spdlog::error("recovery of chain {}: {}", id, e.what());
        }
    }
    for (auto& r : removed) spdlog::info("store {}: removed {}", ctx_.root.string(), r);
    if (report) report->removed = std::move(removed);
}

void store_impl::check_writable() const {
    if (ctx_.opts.read_only) throw store_error(EROFS, "store is read-only");
}

version_record store_impl::record_at(const std::string& path, struct stat* stp) {
    auto rel = ns_rel(path);
    struct stat st {};
    if (!sys::stat_at(ctx_.ns_dir.get(), rel, st))
        throw store_error(ENOENT, path + ": no such file");
    if (S_ISDIR(st.st_mode)) throw store_error(EISDIR, path + ": is a directory");
    if (!S_ISREG(st.st_mode)) throw store_error(EINVAL, path + ": not a regular file");
    if (stp) *stp = st;
    return parse_record(sys::read_small_file(ctx_.ns_dir.get(), rel, full(path)), full(path));
}

file_stat store_impl::stat(const std::string& path) {
    auto rel = ns_rel(path);
    struct stat st {};
    if (!sys::stat_at(ctx_.ns_dir.get(), rel, st))
        throw store_error(ENOENT, path + ": no such file");
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
    } else if (S_ISREG(st.st_mode)) {
        f.type = entry_type::file;
        auto rec =
            parse_record(sys::read_small_file(ctx_.ns_dir.get(), rel, full(path)), full(path));
        f.size = rec.size;
        f.version = rec.version;
        struct stat obj {};
        f.stored_bytes =
            sys::stat_at(ctx_.chains_dir.get(), rec.chain_id + "/objects/" + rec.version, obj)
                ? static_cast<std::uint64_t>(obj.st_size)
                : 0;
    }
    return f;
}

std::vector<dir_entry> store_impl::list(const std::string& dir) {
    auto rel = ns_rel(dir);
    auto d = sys::open_at(ctx_.ns_dir.get(), rel, O_RDONLY | O_DIRECTORY, 0, full(dir));
    std::vector<dir_entry> out;
    for (auto& name : sys::list_dir(d.get(), ".")) {
        struct stat st {};
        if (!sys::stat_at(d.get(), name, st)) continue;
        auto t = S_ISDIR(st.st_mode)   ? entry_type::directory
                 : S_ISREG(st.st_mode) ? entry_type::file
                 : S_ISLNK(st.st_mode) ? entry_type::symlink
                                       : entry_type::other;
        out.push_back({std::move(name), t});
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
    if (!chain_id.empty()) schedule({false, chain_id, {}});
}

void store_impl::rename(const std::string& from, const std::string& to, unsigned flags) {
    check_writable();
    auto rf = ns_rel(from), rt = ns_rel(to);
    if (from.empty() || to.empty()) throw store_error(EBUSY, "cannot rename the root");
    std::string replaced_chain;
    {
        std::lock_guard lock(ns_mutex_);
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
        sys::rename_at(ctx_.ns_dir.get(), rf, ctx_.ns_dir.get(), rt, flags, from + " -> " + to);
    }
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rt), full(to));
    if (parent_rel(rt) != parent_rel(rf))
        sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rf), full(from));
    if (!replaced_chain.empty()) schedule({false, replaced_chain, {}});
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

std::string store_impl::publish(const std::string& path, const std::string& expected,
                                object_encoder& enc, std::uint64_t size) {
    return publish_new(path, expected, enc, size, 0644);
}

// The commit protocol (each step durable before the next; a crash anywhere leaves the old
// or the new file): object renamed into its chain; record written and fsynced in tmp/, then
// linked into the chain's versions/; then renamed over the path. Leftovers of an interrupted
// commit are a tmp/ file or an unnamed version, both removed on the next open.
std::string store_impl::publish_new(const std::string& path, const std::string& expected,
                                    object_encoder& enc, std::uint64_t size, std::uint32_t mode) {
    auto rel = ns_rel(path);
    auto key = chain_key_for(path);
    chain c(ctx_, chain_id_for_key(key), &key);
    auto vid = new_version_id();
    enc.writer().publish(c.objects(), vid);
    sys::fsync_fd(c.objects(), c.shown("objects"));

    auto text = encode_record({c.id(), vid, path, size, now_ns()});
    auto tmp = ctx_.tmp_name("record");
    auto rec = sys::open_at(ctx_.tmp_dir.get(), tmp, O_RDWR | O_CREAT | O_EXCL, 0600, full(path));
    sys::write_all(rec.get(), std::as_bytes(std::span(text)), full(path));
    sys::fsync_fd(rec.get(), full(path));
    sys::link_at(ctx_.tmp_dir.get(), tmp, c.versions(), vid, c.shown("versions/" + vid));
    sys::fsync_fd(c.versions(), c.shown("versions"));

    bool named = false;
    std::string replaced_chain;
    try {
        std::lock_guard lock(ns_mutex_);
        if (!expected.empty()) {
            struct stat st {};
            if (sys::stat_at(ctx_.ns_dir.get(), rel, st) && S_ISREG(st.st_mode) &&
                record_at(path).version == expected) {
                // The new version keeps the file's mode and extended attributes.
                sys::mutation_point();
                if (::fchmod(rec.get(), st.st_mode & 07777) != 0)
                    sys::fail("cannot chmod", full(path));
                for (auto& name : listxattr(path)) {
                    auto v = getxattr(path, name);
                    if (::fsetxattr(rec.get(), name.c_str(), v.data(), v.size(), 0) != 0)
                        spdlog::warn("{}: attribute {} not kept: {}", path, name,
                                     std::strerror(errno));
                }
                replaced_chain = record_at(path).chain_id;
                sys::rename_at(ctx_.tmp_dir.get(), tmp, ctx_.ns_dir.get(), rel, 0, full(path));
                named = true;
            }
        } else {
            sys::mutation_point();
            if (::fchmod(rec.get(), mode & 07777) != 0) sys::fail("cannot chmod", full(path));
            sys::mutation_point();
            if (::renameat2(ctx_.tmp_dir.get(), tmp.c_str(), ctx_.ns_dir.get(), rel.c_str(),
                            RENAME_NOREPLACE) == 0)
                named = true;
            else if (errno != EEXIST)
                sys::fail("cannot create", path);
        }
    } catch (const sys::injected_crash&) {
        throw;
    } catch (...) {
        sys::remove_if_exists(ctx_.tmp_dir.get(), tmp);
        schedule({false, c.id(), {}});
        throw;
    }
    if (!named) {
        sys::remove_if_exists(ctx_.tmp_dir.get(), tmp);
        schedule({false, c.id(), {}});
        return {};
    }
    sys::fsync_fd(rec.get(), full(path)); // the mode and attributes copied under the lock
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rel), full(path));
    ctx_.counters.commits++;
    ctx_.counters.bytes_committed += size;
    if (size > 0) schedule({true, c.id(), vid});
    if (!replaced_chain.empty()) schedule({false, replaced_chain, {}});
    return vid;
}

void store_impl::schedule(task t) {
    if (!worker_.joinable()) {
        run_task(t);
        return;
    }
    {
        std::lock_guard lock(tasks_mutex_);
        if (!queued_.insert(t).second) return;
        tasks_.push_back(std::move(t));
    }
    tasks_cv_.notify_one();
}

void store_impl::run_task(const task& t) {
    try {
        chain c(ctx_, t.chain_id);
        if (t.compact) {
            // The previous version first: it reads this one while still uncompressed (fast).
            compact_after_commit(ctx_, c, t.version);
            compress_uncompressed(ctx_, c);
        } else
            collect_chain(ctx_, c);
    } catch (const sys::injected_crash&) {
        throw;
    } catch (const std::exception& e) {
        spdlog::error("store maintenance of chain {}: {}", t.chain_id, e.what());
    }
}

void store_impl::maintenance_loop() {
    std::unique_lock lock(tasks_mutex_);
    for (;;) {
        tasks_cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return; // stopping, and everything queued is done
        auto t = std::move(tasks_.front());
        tasks_.pop_front();
        queued_.erase(t);
        busy_ = true;
        lock.unlock();
        try {
            run_task(t);
        } catch (...) {
        }
        lock.lock();
        busy_ = false;
        if (tasks_.empty()) idle_cv_.notify_all();
    }
}

store_counters store_impl::counters() const {
    auto c = ctx_.counters.snapshot();
    std::lock_guard lock(tasks_mutex_);
    c.maintenance_pending = tasks_.size() + (busy_ ? 1 : 0);
    return c;
}

void store_impl::wait_idle() {
    if (!worker_.joinable()) return;
    std::unique_lock lock(tasks_mutex_);
    idle_cv_.wait(lock, [&] { return tasks_.empty() && !busy_; });
}

void store_impl::collect_garbage() {
    check_writable();
    wait_idle();
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) collect_chain(ctx_, chain(ctx_, id));
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

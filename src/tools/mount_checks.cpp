#include "mount_checks.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <sys/stat.h>

#include "tpde/fs/mount.hpp"

namespace fsys = std::filesystem;

namespace tpde::tools {
namespace {

std::string real_path(const std::string& p) {
    std::unique_ptr<char, decltype(&std::free)> r(::realpath(p.c_str(), nullptr), &std::free);
    if (!r) throw std::runtime_error("mount point " + p + ": " + std::strerror(errno));
    return r.get();
}

// The first entry of `dir` other than . and .., or "" when it is empty.
std::string first_entry(const std::string& dir) {
    struct closer {
        void operator()(DIR* d) const { ::closedir(d); }
    };
    std::unique_ptr<DIR, closer> d(::opendir(dir.c_str()));
    if (!d) throw std::runtime_error("mount point " + dir + ": " + std::strerror(errno));
    while (auto* e = ::readdir(d.get())) {
        std::string n = e->d_name;
        if (n != "." && n != "..") return n;
    }
    return "";
}

void refuse_mount_point(const std::string& path, const fs::mount_entry& m) {
    throw std::runtime_error(path + " is already a mount point (" + m.fstype + " " + m.source +
                             "): mounting on it would hide that mount. Unmount it first (umount " +
                             path + ", or fusermount3 -u " + path +
                             " for a FUSE mount), or give -o nonempty to mount over it anyway");
}

} // namespace

std::string check_mountpoint(const std::string& mountpoint, bool nonempty) {
    if (mountpoint.empty()) throw std::runtime_error("mount point: empty path");
    std::string abs = fsys::absolute(mountpoint).string(); // lexical: no stat
    while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
    auto slash = abs.rfind('/');
    std::string parent = slash == 0 ? "/" : abs.substr(0, slash), name = abs.substr(slash + 1);
    std::string path;
    if (abs == "/" || name == "." || name == "..")
        path = real_path(abs);
    else
        path = (parent == "/" ? "" : real_path(parent)) + "/" + name;
    auto m = fs::mount_at(path);
    if (!m) {
        // Not a mount point: its lstat goes to the filesystem it is on, not to a FUSE daemon.
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0)
            throw std::runtime_error("mount point " + path + ": " + std::strerror(errno) +
                                     (errno == ENOENT ? " (create the directory first)" : ""));
        if (S_ISLNK(st.st_mode)) {
            path = real_path(path);
            m = fs::mount_at(path);
        }
    }
    if (m && m->fstype == "autofs") return path; // the automount we are mounted by: never read it
    if (m) {
        if (!nonempty) refuse_mount_point(path, *m);
        return path;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw std::runtime_error("mount point " + path + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) throw std::runtime_error("mount point " + path + ": not a directory");
    if (!nonempty) {
        auto e = first_entry(path);
        if (!e.empty())
            throw std::runtime_error(path + " is not empty (it holds '" + e +
                                     "', ...): mounting on it would hide its files. Use an "
                                     "empty directory, or give -o nonempty to mount over them");
    }
    return path;
}

bool fuse_conf_allows_other(const std::string& conf) {
    std::ifstream in(conf);
    for (std::string line; std::getline(in, line);) {
        auto b = line.find_first_not_of(" \t");
        auto e = line.find_last_not_of(" \t\r");
        if (b != std::string::npos && line.substr(b, e - b + 1) == "user_allow_other") return true;
    }
    return false;
}

new_store_cleanup::new_store_cleanup(const fsys::path& store) : store_(fsys::absolute(store)) {
    std::error_code ec;
    if (!fsys::exists(store_, ec)) {
        applies_ = true;
        first_created_ = store_;
        for (auto p = store_.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
            if (fsys::exists(p, ec)) break;
            first_created_ = p;
        }
    } else {
        applies_ = fsys::is_directory(store_, ec) && fsys::is_empty(store_, ec);
    }
}

void new_store_cleanup::remove_created() noexcept {
    if (!applies_) return;
    applies_ = false;
    std::error_code ec;
    // What store::init makes, and what a writable open adds (locks, this node's tmp/).
    for (auto n : {"tpdefs-store", "lock", "ns", "chains", "tmp", "nodes", "locks"})
        fsys::remove_all(store_ / n, ec);
    if (first_created_.empty()) return;
    // The directories made for it, innermost first; fs::remove leaves a non-empty one.
    for (auto p = store_;; p = p.parent_path()) {
        if (!fsys::remove(p, ec)) break;
        if (p == first_created_) break;
    }
}

} // namespace tpde::tools

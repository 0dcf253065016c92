#include "store_commands.hpp"

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <memory>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

#include "file_io.hpp"
#include "tpde/store/store.hpp"

namespace fs = std::filesystem;

namespace tpde::tools {
namespace {

struct store_args {
    fs::path store;
    unsigned threads{store::store_options{}.encode_threads};
    // Half the daemon's: a command runs beside training, briefly.
    std::size_t cache_mib{store::store_options{}.cache.max_bytes / 2 >> 20};
    std::string node; // empty: the host name
};

store::store_options options_for(const store_args& a, bool read_only = false) {
    store::store_options o;
    o.encode_threads = a.threads;
    o.cache.max_bytes = a.cache_mib << 20;
    o.read_only = read_only;
    o.node = a.node;
    return o;
}

std::unique_ptr<store::store> open_existing(const store_args& a, bool read_only = false) {
    if (!fs::exists(a.store / "tpdefs-store"))
        throw std::runtime_error(a.store.string() + " is not a tpdefs store (run `tpde init " +
                                 a.store.string() + "` to create one)");
    store::recovery_report rep;
    auto s = store::store::open(a.store, options_for(a, read_only), &rep);
    for (auto& r : rep.removed) fmt::print(stderr, "tpde: recovery removed {}\n", r);
    return s;
}

std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

// Natural order ("checkpoint-500" before "checkpoint-1000"): the order checkpoints were
// written in, which is the order their chain should see them.
bool natural_less(const std::string& a, const std::string& b) {
    std::size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        if (std::isdigit(static_cast<unsigned char>(a[i])) &&
            std::isdigit(static_cast<unsigned char>(b[j]))) {
            auto i2 = i, j2 = j;
            while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
            while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
            auto x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
            x.erase(0, std::min(x.find_first_not_of('0'), x.size()));
            y.erase(0, std::min(y.find_first_not_of('0'), y.size()));
            if (x.size() != y.size()) return x.size() < y.size();
            if (x != y) return x < y;
            i = i2;
            j = j2;
        } else {
            if (a[i] != b[j]) return a[i] < b[j];
            ++i;
            ++j;
        }
    }
    return a.size() - i < b.size() - j;
}

std::string ratio_text(std::uint64_t logical, std::uint64_t stored) {
    return stored ? fmt::format("{:.3f}", double(logical) / double(stored)) : "-";
}

void ls_entry(store::store& s, const std::string& path, bool recursive) {
    auto st = s.stat(path);
    if (st.type == store::entry_type::directory) {
        auto entries = s.list(path);
        std::sort(entries.begin(), entries.end(),
                  [](auto& x, auto& y) { return natural_less(x.name, y.name); });
        for (auto& e : entries) {
            auto p = join(path, e.name);
            if (e.type == store::entry_type::directory) {
                fmt::print("{:>14} {:>14} {:>7} {:<28} {:<28} {}/\n", "-", "-", "-", "-", "-", p);
                if (recursive) ls_entry(s, p, true);
            } else {
                ls_entry(s, p, false);
            }
        }
        return;
    }
    if (st.type == store::entry_type::symlink) {
        fmt::print("{:>14} {:>14} {:>7} {:<28} {:<28} {} -> {}\n", "-", "-", "-", "-", "-", path,
                   s.readlink(path));
        return;
    }
    auto v = s.info(path);
    fmt::print("{:>14} {:>14} {:>7} {:<28} {:<28} {}\n", v.logical_size, v.stored_bytes,
               ratio_text(v.logical_size, v.stored_bytes), v.chain_key,
               v.base.empty() ? "(standalone)" : v.base_path, path);
}

int run_ls(const store_args& a, const std::string& path, bool recursive) {
    auto s = open_existing(a, true);
    s->stat(path); // a missing path fails before the header is printed
    fmt::print("{:>14} {:>14} {:>7} {:<28} {:<28} {}\n", "size", "stored", "ratio", "chain",
               "delta against", "path");
    ls_entry(*s, path, recursive);
    return 0;
}

// The whole file, through `out` (committed only when complete). Returns its size.
std::uint64_t copy_out(const store::file_reader& r, const fs::path& to) {
    output_file out(to);
    std::vector<std::byte> buf(4u << 20);
    for (std::uint64_t off = 0; off < r.size();) {
        auto n = r.read(off, buf);
        out.write({buf.data(), n});
        off += n;
    }
    out.commit();
    return r.size();
}

int run_cat(const store_args& a, const std::string& path) {
    auto s = open_existing(a, true);
    copy_out(*s->open_reader(path), "-");
    return 0;
}

void copy_xattrs_out(store::store& s, const std::string& path, const fs::path& to) {
    for (auto& name : s.listxattr(path)) {
        auto v = s.getxattr(path, name);
        if (::lsetxattr(to.c_str(), name.c_str(), v.data(), v.size(), 0) != 0)
            fmt::print(stderr, "tpde: warning: {}: attribute {} not copied: {}\n", to.string(),
                       name, std::strerror(errno));
    }
}

void export_tree(store::store& s, const std::string& path, const fs::path& to, std::uint64_t& files,
                 std::uint64_t& bytes) {
    for (auto& e : s.list(path)) {
        auto p = join(path, e.name);
        auto dst = to / e.name;
        auto st = s.stat(p);
        if (e.type == store::entry_type::directory) {
            fs::create_directory(dst);
            export_tree(s, p, dst, files, bytes);
        } else if (e.type == store::entry_type::symlink) {
            fs::create_symlink(s.readlink(p), dst);
            continue;
        } else if (e.type == store::entry_type::file) {
            bytes += copy_out(*s.open_reader(p), dst);
            ++files;
        } else {
            continue;
        }
        copy_xattrs_out(s, p, dst);
        ::chmod(dst.c_str(), st.mode);
        timespec ts[2] = {st.atime, st.mtime};
        ::utimensat(AT_FDCWD, dst.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
}

int run_export(const store_args& a, const fs::path& dir) {
    auto s = open_existing(a, true);
    std::error_code ec;
    if (fs::exists(dir) && !fs::is_empty(dir, ec))
        throw std::runtime_error(dir.string() +
                                 " is not empty: export needs a new or empty directory");
    fs::create_directories(dir);
    std::uint64_t files = 0, bytes = 0;
    export_tree(*s, "", dir, files, bytes);
    fmt::print(stderr, "tpde: exported {} files, {} bytes to {}\n", files, bytes, dir.string());
    return 0;
}

void import_tree(store::store& s, const fs::path& from, const std::string& path,
                 std::uint64_t& files, std::uint64_t& bytes) {
    std::vector<fs::directory_entry> entries(fs::directory_iterator(from),
                                             fs::directory_iterator{});
    std::sort(entries.begin(), entries.end(), [](auto& x, auto& y) {
        return natural_less(x.path().filename().string(), y.path().filename().string());
    });
    for (auto& e : entries) {
        auto p = join(path, e.path().filename().string());
        struct stat st {};
        if (::lstat(e.path().c_str(), &st) != 0)
            throw std::system_error(errno, std::generic_category(),
                                    "cannot stat " + e.path().string());
        if (S_ISDIR(st.st_mode)) {
            s.mkdir(p, st.st_mode & 07777);
            import_tree(s, e.path(), p, files, bytes);
        } else if (S_ISLNK(st.st_mode)) {
            s.symlink(fs::read_symlink(e.path()).string(), p);
            continue;
        } else if (S_ISREG(st.st_mode)) {
            input_file in(e.path());
            s.create(p, st.st_mode & 07777, true);
            auto w = s.open_writer(p, true);
            constexpr std::size_t chunk = 1u << 20; // as a FUSE write stream would arrive
            std::vector<std::byte> buffer;
            for (std::uint64_t off = 0; off < in.size(); off += chunk)
                w->write(off, in.read(off, chunk, buffer));
            if (!w->commit()) throw std::runtime_error(p + ": commit failed");
            ++files;
            bytes += in.size();
        } else {
            fmt::print(stderr, "tpde: skipping {} (not a file, directory or symlink)\n",
                       e.path().string());
            continue;
        }
        std::vector<char> names(65536);
        auto n = ::llistxattr(e.path().c_str(), names.data(), names.size());
        for (ssize_t i = 0; n > 0 && i < n;) {
            std::string name(names.data() + i);
            i += static_cast<ssize_t>(name.size()) + 1;
            if (name.rfind("user.tpde.", 0) == 0) continue; // a copy of a mount's own attributes
            std::vector<std::byte> v(65536);
            auto m = ::lgetxattr(e.path().c_str(), name.c_str(), v.data(), v.size());
            if (m >= 0) s.setxattr(p, name, {v.data(), static_cast<std::size_t>(m)}, 0);
        }
        s.chmod(p, st.st_mode & 07777);
        s.utimens(p, st.st_atim, st.st_mtim);
    }
}

int run_import(const store_args& a, const fs::path& dir) {
    if (!fs::is_directory(dir)) throw std::runtime_error(dir.string() + " is not a directory");
    store::recovery_report rep;
    auto s = store::store::open(a.store, options_for(a), &rep);
    for (auto& r : rep.removed) fmt::print(stderr, "tpde: recovery removed {}\n", r);
    std::uint64_t files = 0, bytes = 0;
    import_tree(*s, dir, "", files, bytes);
    s->wait_idle();
    auto stored = s->stored_bytes();
    fmt::print(stderr, "tpde: imported {} files, {} bytes, stored in {} bytes (ratio {})\n", files,
               bytes, stored, ratio_text(bytes, stored));
    return 0;
}

int run_fsck(const store_args& a, bool repair) {
    auto s = open_existing(a, !repair);
    auto r = s->fsck(repair);
    for (auto& p : r.problems) fmt::print("{}\n", p);
    for (auto& p : r.repaired) fmt::print("repaired: removed {}\n", p);
    // Every frame of every version's object is decoded once, on one thread, in chain order;
    // the count is the number of frames the objects hold, the same at any -j.
    std::string unchecked;
    if (r.frames_unchecked)
        unchecked +=
            fmt::format(", {} not checkable (their reference is damaged)", r.frames_unchecked);
    if (r.versions_unchecked)
        unchecked +=
            fmt::format(", {} version(s) whose object does not open", r.versions_unchecked);
    fmt::print(stderr,
               "tpde fsck: {} files, {} versions, {} frames: {} checked intact, {} damaged{} "
               "(each frame checked once): {}\n",
               r.files, r.versions, r.frames, r.frames_checked, r.frames_damaged, unchecked,
               r.ok() ? "no problems" : fmt::format("{} problem(s)", r.problems.size()));
    if (r.frames_damaged || r.versions_unchecked)
        fmt::print(stderr, "tpde fsck: the files named above have damaged data: restore them "
                           "from a copy (--repair removes only unfinished work and unreachable "
                           "versions; it does not fix frames)\n");
    return r.ok() ? 0 : 1;
}

int run_gc(const store_args& a) {
    auto s = open_existing(a);
    auto before = s->stored_bytes();
    s->collect_garbage();
    auto c = s->counters();
    fmt::print(stderr, "tpde gc: freed {} version(s), {} bytes; store holds {} bytes (was {})\n",
               c.versions_freed, c.bytes_freed, s->stored_bytes(), before);
    return 0;
}

} // namespace

std::function<int()> add_store_commands(CLI::App& app) {
    auto a = std::make_shared<store_args>();
    auto add_store = [&](CLI::App* sub) {
        sub->add_option("STORE", a->store, "store directory")->required();
    };
    auto add_perf = [&](CLI::App* sub) {
        sub->add_option("-j,--threads", a->threads, "encode worker threads")
            ->check(CLI::Range(1u, 256u))
            ->capture_default_str();
        sub->add_option("--cache-mib", a->cache_mib, "decoded-block cache, MiB")
            ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
            ->capture_default_str();
    };

    // Commands that write take a node name, as a daemon does (readers take no lock).
    auto add_node = [&](CLI::App* sub) {
        sub->add_option("--node", a->node,
                        "node name to write as (default: the host name); another than a "
                        "running daemon's of this host");
    };

    auto* init = app.add_subcommand("init", "create an empty store in STORE (missing or empty)");
    add_store(init);

    auto repair = std::make_shared<bool>(false);
    auto* fsck = app.add_subcommand("fsck", "check every file, version and frame of STORE; "
                                            "exit 1 on any problem");
    add_store(fsck);
    fsck->add_flag("--repair", *repair,
                   "remove what no file needs (unfinished writes, unreachable versions); never "
                   "committed data");
    fsck->add_option("-j,--threads", a->threads,
                     "threads that decode ahead the reference data a delta frame is checked "
                     "against; the frames themselves are checked one at a time, each exactly "
                     "once, so the frame count does not depend on -j")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    fsck->add_option("--cache-mib", a->cache_mib,
                     "decoded-block cache for reference data, MiB (frames checked bypass it)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->capture_default_str();
    add_node(fsck);

    auto* gc = app.add_subcommand("gc", "free every version of STORE that no file names");
    add_store(gc);
    add_perf(gc);
    add_node(gc);

    auto path = std::make_shared<std::string>();
    auto recursive = std::make_shared<bool>(false);
    auto* ls = app.add_subcommand("ls", "list PATH in STORE: size, stored size, ratio, chain, "
                                        "the version each file is a delta against");
    add_store(ls);
    ls->add_option("PATH", *path, "file or directory inside the store (default: the root)");
    ls->add_flag("-R,--recursive", *recursive, "list subdirectories too");

    auto cat_path = std::make_shared<std::string>();
    auto* cat = app.add_subcommand("cat", "write the file PATH of STORE to standard output");
    add_store(cat);
    cat->add_option("PATH", *cat_path, "file inside the store")->required();
    add_perf(cat);

    auto dir = std::make_shared<fs::path>();
    auto* exp = app.add_subcommand("export", "copy every file of STORE out to DIR as plain files");
    add_store(exp);
    exp->add_option("DIR", *dir, "new or empty directory")->required();
    add_perf(exp);

    auto src = std::make_shared<fs::path>();
    auto* imp = app.add_subcommand("import", "copy the tree DIR into STORE (created if missing), "
                                             "in natural name order so checkpoints chain in order");
    imp->add_option("DIR", *src, "directory to import")->required()->check(CLI::ExistingDirectory);
    add_store(imp);
    add_perf(imp);
    add_node(imp);

    return [=]() -> int {
        auto strip = [](std::string p) {
            while (!p.empty() && p.front() == '/') p.erase(0, 1);
            while (!p.empty() && p.back() == '/') p.pop_back();
            return p;
        };
        if (*init) {
            store::store::init(a->store);
            return 0;
        }
        if (*fsck) return run_fsck(*a, *repair);
        if (*gc) return run_gc(*a);
        if (*ls) return run_ls(*a, strip(*path), *recursive);
        if (*cat) return run_cat(*a, strip(*cat_path));
        if (*exp) return run_export(*a, *dir);
        if (*imp) return run_import(*a, *src);
        return -1;
    };
}

} // namespace tpde::tools

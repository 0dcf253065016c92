// Opening a store: creating it, checking its marker, and the locks of a writer: its node's
// (one process per node name: recovery at open deletes the node's work in progress) and the
// store lock, held shared by every writer (a tpdefs of the single-writer store format holds
// it exclusively, so the two never write one store at once).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <thread>
#include <unistd.h>

#include "store_impl.hpp"

namespace fs = std::filesystem;

namespace tpde::store {
namespace {

constexpr const char* marker_name = "tpdefs-store";
constexpr int store_format_version = 1;

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

const char* holder_of(int fd, char (&buf)[256]) {
    auto n = ::pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    for (auto* p = buf; *p; ++p)
        if (*p == '\n') *p = 0;
    return buf;
}

bool valid_node_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

void mkdir_if_missing(int dirfd, const char* name, const std::string& shown) {
    sys::mutation_point();
    if (::mkdirat(dirfd, name, 0755) != 0 && errno != EEXIST) sys::fail("cannot create", shown);
}

} // namespace

std::string store::node_name(const store_options& opts) {
    std::string n = opts.node;
    if (n.empty()) {
        char host[256] = {};
        if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) std::strcpy(host, "localhost");
        n = host;
        for (auto& c : n)
            if (!valid_node_char(c)) c = '-'; // a host name is always usable
        if (n.size() > 64) n.resize(64);
        if (n == "." || n == "..") n = "localhost";
        return n;
    }
    if (n.size() > 64 || n == "." || n == ".." || !std::all_of(n.begin(), n.end(), valid_node_char))
        throw store_error(EINVAL, fmt::format("invalid node name '{}': use at most 64 letters, "
                                              "digits, '.', '_' or '-'",
                                              n));
    return n;
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
                if ((n != "ns" && n != "chains" && n != "tmp" && n != "nodes") ||
                    !fs::is_directory(e.path()) || !fs::is_empty(e.path()))
                    unfinished_init = false;
            }
            if (!unfinished_init)
                throw store_error(EEXIST, root.string() +
                                              " is not empty: a store needs an empty directory");
            for (auto d : {"ns", "chains", "tmp", "nodes"}) fs::remove(root / d, ec);
        }
    } else if (!fs::create_directories(root, ec)) {
        throw store_error(ec.value(),
                          fmt::format("cannot create {}: {}", root.string(), ec.message()));
    }
    auto dir = sys::open_dir(root.string());
    // Two hosts may create one store at once: both succeed, with the same content.
    for (auto d : {"ns", "chains", "tmp", "nodes"})
        mkdir_if_missing(dir.get(), d, (root / d).string());
    nlohmann::json marker{{"format", "tpdefs-store"}, {"version", store_format_version}};
    auto text = marker.dump() + "\n";
    auto tmp_marker = fmt::format("tmp/marker-{}-{:016x}", ::getpid(), new_object_uid());
    auto tmp = sys::open_at(dir.get(), tmp_marker, O_WRONLY | O_CREAT | O_EXCL, 0644,
                            (root / tmp_marker).string());
    sys::write_all(tmp.get(), std::as_bytes(std::span(text)), (root / marker_name).string());
    sys::fsync_fd(tmp.get(), (root / marker_name).string());
    sys::rename_at(dir.get(), tmp_marker, dir.get(), marker_name, 0, (root / marker_name).string());
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
        marker = read_store_file(AT_FDCWD, (root / marker_name).string(), root.string());
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
    ctx_.node = node_name(opts);
    ctx_.root_dir = sys::open_dir(root.string());
    ctx_.ns_dir = sys::open_dir((root / "ns").string());
    ctx_.chains_dir = sys::open_dir((root / "chains").string());
    if (!opts.read_only) take_writer_locks(); // readers take none: they run beside writers
    if (opts.encode_threads > 1)
        ctx_.pool = std::make_unique<util::thread_pool>(opts.encode_threads);
    maintenance_ = std::make_unique<maintenance_queue>(ctx_, opts.background_maintenance);
}

void store_impl::take_writer_locks() {
    const auto& root = ctx_.root;
    int lf = ::openat(ctx_.root_dir.get(), "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lf < 0) sys::fail("cannot open", (root / "lock").string());
    lock_file_ = sys::fd(lf);
    if (!take_store_lock(lf, LOCK_SH)) {
        char buf[256];
        std::string holder = holder_of(lf, buf);
        bool alive = !holder.empty() && fs::exists("/proc/" + holder);
        throw store_error(EBUSY, fmt::format("store {} is in use by a tpdefs that does not share "
                                             "stores{}; stop it first",
                                             root.string(), alive ? " (pid " + holder + ")" : ""));
    }
    mkdir_if_missing(ctx_.root_dir.get(), "nodes", (root / "nodes").string());
    auto lock_name = "nodes/" + ctx_.node + ".lock";
    int nf = ::openat(ctx_.root_dir.get(), lock_name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (nf < 0) sys::fail("cannot open", (root / lock_name).string());
    node_lock_ = sys::fd(nf);
    if (!take_store_lock(nf, LOCK_EX)) {
        char buf[256];
        throw store_error(EBUSY, fmt::format("store {} is in use by another process of node {} "
                                             "({}); unmount it or stop that process first, or "
                                             "give each daemon its own node name (--node)",
                                             root.string(), ctx_.node, holder_of(nf, buf)));
    }
    char host[256] = {};
    (void)::gethostname(host, sizeof host - 1);
    auto who = fmt::format("pid {} on host {}\n", ::getpid(), host);
    if (::ftruncate(nf, 0) == 0) (void)!::pwrite(nf, who.data(), who.size(), 0);
    mkdir_if_missing(ctx_.root_dir.get(), "tmp", (root / "tmp").string());
    auto tmp = "tmp/" + ctx_.node;
    mkdir_if_missing(ctx_.root_dir.get(), tmp.c_str(), (root / tmp).string());
    ctx_.tmp_dir = sys::open_dir((root / tmp).string());
}

store_impl::~store_impl() = default; // the queue finishes its work first

} // namespace tpde::store

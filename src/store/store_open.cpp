// Opening a store: creating it, checking its marker, and the lock that keeps it to one
// writable process (recovery at open deletes tmp/, which would be another's work).
#include <chrono>
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

} // namespace

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
    maintenance_ = std::make_unique<maintenance_queue>(ctx_, opts.background_maintenance);
}

store_impl::~store_impl() = default; // the queue finishes its work first

} // namespace tpde::store

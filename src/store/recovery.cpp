// Recovery at open: what an unclean stop (a crash, a kill, a power cut) left behind is
// removed, and maintenance it interrupted is done again. Every step of a commit or of
// maintenance leaves either the old or the new state (see commit.cpp), so recovery only
// deletes what no file needs and redoes what is safe to redo.
#include <fcntl.h>
#include <fmt/core.h>
#include <regex>
#include <spdlog/spdlog.h>
#include <sys/file.h>

#include "maintenance.hpp"
#include "store_impl.hpp"

namespace tpde::store {
namespace {

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

bool single_writer_leftover(const std::string& name, bool is_directory) {
    // Nodes keep their work in directories; a file directly in tmp/ is nobody's. The store
    // lock, shared by every writer of the multi-node format, guarantees that no writer of the
    // earlier format (which held it exclusively) is running.
    static const std::regex re("chain-[0-9]+-[0-9a-f]{16}");
    return !is_directory || std::regex_match(name, re);
}

bool node_running(int root_dir, const std::string& node) {
    int fd = ::openat(root_dir, ("nodes/" + node + ".lock").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false; // never ran as a node of this format
    sys::fd guard(fd);
    // Its daemon holds the lock exclusively while it runs (and the lock dies with it: with
    // GlusterFS within ~20 ms of the process or its client).
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
        ::flock(fd, LOCK_UN);
        return false;
    }
    return true;
}

void store_impl::reclaim_dead_nodes(std::vector<std::string>& removed) {
    auto tmp_root = sys::open_dir((ctx_.root / "tmp").string());
    for (auto& node : sys::list_dir(tmp_root.get(), ".")) {
        struct stat st {};
        if (node == ctx_.node || !sys::stat_at(tmp_root.get(), node, st) ||
            single_writer_leftover(node, S_ISDIR(st.st_mode)))
            continue;
        // Held while its work is removed, so the node cannot start meanwhile.
        auto lock_name = "nodes/" + node + ".lock";
        int fd =
            ::openat(ctx_.root_dir.get(), lock_name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) sys::fail("cannot open", (ctx_.root / lock_name).string());
        sys::fd guard(fd);
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) continue; // running: its work is its own
        auto dir = sys::open_at(tmp_root.get(), node, O_RDONLY | O_DIRECTORY, 0, node);
        for (auto& name : sys::list_dir(dir.get(), ".")) {
            remove_leftover(dir.get(), name);
            removed.push_back(
                fmt::format("tmp/{}/{} (left by node {}, which is not running)", node, name, node));
        }
        ::flock(fd, LOCK_UN);
    }
}

void store_impl::recover(recovery_report* report) {
    std::vector<std::string> removed;
    // Only this node's work in progress: other nodes' is theirs (fsck --repair reclaims the
    // leftovers of a node that never comes back).
    for (auto& name : sys::list_dir(ctx_.tmp_dir.get(), ".")) {
        remove_leftover(ctx_.tmp_dir.get(), name);
        removed.push_back("tmp/" + ctx_.node + "/" + name + " (unfinished write)");
    }
    auto tmp_root = sys::open_dir((ctx_.root / "tmp").string());
    for (auto& name : sys::list_dir(tmp_root.get(), ".")) {
        struct stat st {};
        if (!sys::stat_at(tmp_root.get(), name, st) ||
            !single_writer_leftover(name, S_ISDIR(st.st_mode)))
            continue;
        remove_leftover(tmp_root.get(), name);
        removed.push_back("tmp/" + name + " (unfinished write)");
    }
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) {
        try {
            chain c(ctx_, id);
            for (auto& obj : sys::list_dir(c.objects(), ".")) {
                // A commit in progress keeps a second link to its object in its node's tmp/
                // until its record is linked; so an object with one link and, looked at after
                // that, no record is nobody's.
                struct stat st {};
                if (!sys::stat_at(c.objects(), obj, st) || st.st_nlink > 1 ||
                    sys::stat_at(c.versions(), obj, st))
                    continue;
                sys::unlink_at(c.objects(), obj, 0, c.shown("objects/" + obj));
                removed.push_back("chains/" + id + "/objects/" + obj + " (never committed)");
            }
            chain_work_lock work(c.dir(), false);
            if (!work.held()) continue; // another node is maintaining it right now
            auto before = ctx_.counters.versions_freed.load();
            collect_chain(ctx_, c);
            auto freed = ctx_.counters.versions_freed.load() - before;
            if (freed)
                removed.push_back(
                    fmt::format("chains/{}: {} version(s) no file names any more", id, freed));
        } catch (const store_error& e) {
            spdlog::error("recovery of chain {}: {}", id, e.what());
        }
    }
    // A stop between a commit and its compaction left a standalone predecessor, or raw
    // blocks: the sweep of each chain does that work (in a mount, in the background: the
    // mount does not wait for it).
    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), "."))
        maintenance_->schedule({maintenance_task::kind::sweep, id, {}});
    for (auto& r : removed) spdlog::info("store {}: removed {}", ctx_.root.string(), r);
    if (report) report->removed = std::move(removed);
}

} // namespace tpde::store

// Recovery at open: what an unclean stop (a crash, a kill, a power cut) left behind is
// removed, and maintenance it interrupted is done again. Every step of a commit or of
// maintenance leaves either the old or the new state (see commit.cpp), so recovery only
// deletes what no file needs and redoes what is safe to redo.
#include <fcntl.h>
#include <fmt/core.h>
#include <set>
#include <spdlog/spdlog.h>

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

} // namespace tpde::store

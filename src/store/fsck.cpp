// tpde fsck: every file's record, every version's object, every frame decoded.
#include <fcntl.h>
#include <fmt/core.h>
#include <map>
#include <set>
#include <spdlog/spdlog.h>

#include "maintenance.hpp"
#include "store_impl.hpp"

namespace tpde::store {
namespace {

// Regular files of the namespace by inode (a version record's inode is its file's).
void walk_ns(int dirfd, const std::string& prefix, std::map<ino_t, std::string>& files,
             std::vector<std::string>& problems) {
    for (auto& name : sys::list_dir(dirfd, ".")) {
        struct stat st {};
        if (!sys::stat_at(dirfd, name, st)) continue;
        auto path = prefix.empty() ? name : prefix + "/" + name;
        if (S_ISDIR(st.st_mode)) {
            auto d = sys::open_at(dirfd, name, O_RDONLY | O_DIRECTORY, 0, path);
            walk_ns(d.get(), path, files, problems);
        } else if (S_ISREG(st.st_mode)) {
            files[st.st_ino] = path;
            if (st.st_nlink != 2)
                problems.push_back(fmt::format("{}: its version record has {} links, not 2 "
                                               "(not in a chain, or linked twice)",
                                               path, st.st_nlink));
        }
    }
}

} // namespace

fsck_report store_impl::fsck(bool repair) {
    fsck_report r;
    if (repair) check_writable();
    // Work in progress of a running node is not a problem; what a stopped one left is.
    auto tmp_root = sys::open_dir((ctx_.root / "tmp").string());
    for (auto& name : sys::list_dir(tmp_root.get(), ".")) {
        struct stat st {};
        if (!sys::stat_at(tmp_root.get(), name, st)) continue;
        if (single_writer_leftover(name, S_ISDIR(st.st_mode))) {
            r.problems.push_back("tmp/" + name + ": unfinished write left by a stop");
            continue;
        }
        if (node_running(ctx_.root_dir.get(), name)) continue;
        auto d = sys::open_at(tmp_root.get(), name, O_RDONLY | O_DIRECTORY, 0, name);
        for (auto& left : sys::list_dir(d.get(), "."))
            r.problems.push_back(fmt::format(
                "tmp/{}/{}: unfinished write left by a stop of node {}", name, left, name));
    }
    std::map<ino_t, std::string> files;
    walk_ns(ctx_.ns_dir.get(), "", files, r.problems);
    r.files = files.size();
    std::map<ino_t, bool> in_chain;

    for (auto& id : sys::list_dir(ctx_.chains_dir.get(), ".")) {
        std::unique_ptr<chain> c;
        try {
            c = std::make_unique<chain>(ctx_, id);
        } catch (const store_error& e) {
            r.problems.push_back(fmt::format("chains/{}: {}", id, e.what()));
            continue;
        }
        for (auto& obj : sys::list_dir(c->objects(), ".")) {
            struct stat st {};
            // Two links: a commit in progress on some node (see recovery).
            if (!sys::stat_at(c->objects(), obj, st) || st.st_nlink > 1 ||
                sys::stat_at(c->versions(), obj, st))
                continue;
            r.problems.push_back(c->shown("objects/" + obj) +
                                 ": object of no version (unfinished commit)");
        }

        std::vector<chain::member> ms;
        {
            chain_lock lock(c->dir(), false);
            ms = c->scan();
        }
        std::map<std::string, std::string> path_of; // version -> file path (or a description)
        for (auto& m : ms) {
            struct stat st {};
            if (sys::stat_at(c->versions(), m.rec.version, st)) {
                auto it = files.find(st.st_ino);
                if (it != files.end()) {
                    path_of[m.rec.version] = it->second;
                    in_chain[st.st_ino] = true;
                }
            }
            if (m.links == 1)
                r.problems.push_back(fmt::format("{}: version no file names (committed as {}; "
                                                 "unreachable)",
                                                 c->shown("versions/" + m.rec.version),
                                                 m.rec.path));
        }
        // Paths hurt by a broken version: its own, and those of versions encoded against it.
        auto affected = [&](const std::string& vid) {
            std::vector<std::string> out;
            std::vector<std::string> todo{vid};
            std::set<std::string> seen;
            while (!todo.empty()) {
                auto v = todo.back();
                todo.pop_back();
                if (!seen.insert(v).second) continue;
                if (path_of.count(v)) out.push_back(path_of[v]);
                for (auto& m : ms)
                    if (m.base == v) todo.push_back(m.rec.version);
            }
            std::string s;
            for (auto& p : out) s += (s.empty() ? "" : ", ") + p;
            return s.empty() ? std::string("(no file)") : s;
        };
        std::set<std::string> broken_object; // versions whose own object does not open
        for (auto& m : ms)
            if (!m.error.empty()) broken_object.insert(m.rec.version);
        const std::string advice =
            "; restore the file(s) named here from a copy (--repair does not fix frames)";
        for (auto& m : ms) {
            ++r.versions;
            if (!m.error.empty()) {
                r.problems.push_back(
                    fmt::format("{}: {}{}", affected(m.rec.version), m.error, advice));
                r.versions_unchecked++;
                continue;
            }
            std::shared_ptr<const version_reader> v;
            try {
                chain_lock lock(c->dir(), false);
                v = c->open_version(m.rec.version, path_of.count(m.rec.version)
                                                       ? path_of[m.rec.version]
                                                       : c->shown("versions/" + m.rec.version));
            } catch (const store_error& e) {
                // Its own object opened in scan(): a base on the way down is broken. When
                // that base's own object is (reported above), this one is listed there.
                if (!broken_object.count(m.base)) {
                    auto who = affected(m.rec.version);
                    std::string what = e.what();
                    r.problems.push_back((what.rfind(who, 0) == 0 ? what : who + ": " + what) +
                                         advice);
                }
                r.versions_unchecked++;
                continue;
            }
            const auto& blocks = v->footer().blocks;
            r.frames += blocks.size();
            if (v->size() != m.rec.size)
                r.problems.push_back(fmt::format("{}: record says {} bytes, object holds {}{}",
                                                 affected(m.rec.version), m.rec.size, v->size(),
                                                 advice));
            std::vector<std::byte> ref, out;
            for (std::size_t i = 0; i < blocks.size(); ++i) {
                try {
                    v->read_reference(i, ref);
                } catch (const store_error&) {
                    // The reference lies in a damaged frame of the base: that frame is
                    // reported once where the base is checked, naming this file too.
                    r.frames_unchecked++;
                    continue;
                }
                out.resize(blocks[i].size);
                try {
                    v->decode_frame(i, ref, out);
                    r.frames_checked++;
                } catch (const store_error& e) {
                    r.frames_damaged++;
                    auto who = affected(m.rec.version);
                    std::string what = e.what();
                    r.problems.push_back(
                        fmt::format("damaged frame: {}; files affected: {}{}", what, who, advice));
                }
            }
        }
    }
    for (auto& [ino, path] : files)
        if (!in_chain.count(ino)) r.problems.push_back(path + ": names no version of any chain");

    if (repair) {
        // Only what no file needs: unfinished writes, objects of no version, unnamed versions.
        // Then check again: what remains is what repair could not (and must not) remove.
        recovery_report rec;
        std::vector<std::string> reclaimed;
        reclaim_dead_nodes(reclaimed);
        recover(&rec);
        rec.removed.insert(rec.removed.begin(), reclaimed.begin(), reclaimed.end());
        auto after = fsck(false);
        after.repaired = std::move(rec.removed);
        return after;
    }
    return r;
}

} // namespace tpde::store

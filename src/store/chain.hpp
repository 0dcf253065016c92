#pragma once
// One chain's directory: chains/<id>/ with its key, a lock file, versions/<vid> (the version
// records, hard-linked from ns/) and objects/<vid> (each version's current encoding).
#include <memory>
#include <string>
#include <vector>

#include "context.hpp"
#include "version_reader.hpp"

namespace tpde::store {

// The record of one committed version: a small JSON file whose inode is also the file in
// ns/ (so its mode, times and xattrs are the file's, and its link count says whether any
// file still names the version).
struct version_record {
    std::string chain_id;
    std::string version;
    std::string path; // where it was committed (a hint: renames do not update it)
    std::uint64_t size{0};
    std::uint64_t seq{0}; // commit time, ns: orders a chain's versions
};
std::string encode_record(const version_record& r);
version_record parse_record(const std::string& text, const std::string& shown);

// A record, marker or key file of the store, whole (corrupt_store if it is absurdly large).
std::string read_store_file(int dirfd, const std::string& rel, const std::string& shown);

std::string chain_id_for_key(const std::string& key);
std::string new_version_id();

// Chain naming. chain_key_for (tpde/store/store.hpp) puts the files of successive checkpoints
// into one chain by their digit runs; these choose, among a chain's earlier versions, the one
// a new version is a delta against.
//
// Whether a file committed as `earlier` may precede `later` in one series of checkpoints.
// Where the step is in a directory (global_step10/, checkpoint-500/), the file name holds the
// rank or shard (mp_rank_01_model_states.pt, __1_0.distcp, model-00002-of-00004): a
// predecessor has the same file name; another name is a sibling of the same step. Whatever
// the layout, a file naming a rank follows the same rank.
bool same_series(const std::string& earlier, const std::string& later);
// "a/b/c.pt" -> "a/b" and "c.pt" ("" and the path itself at the top).
std::string directory_of(const std::string& path);
std::string file_name_of(const std::string& path);
// Orders candidate predecessors: how well the digit runs of `candidate` match those of
// `path`, later runs weighing more (ranks and shard numbers come after step numbers).
std::vector<int> digit_match_score(const std::string& path, const std::string& candidate);

// flock(2) on the chain's lock file: shared to open readers, exclusive to change which
// object a version uses or to delete one. Works across processes on this host (and across
// hosts where the shared filesystem supports flock).
class chain_lock {
public:
    chain_lock(int chain_dir, bool exclusive);
    ~chain_lock();
    // Throws unless the lock is still ours, asked of the filesystem (flock again, not waiting):
    // before a change the lock guards. On GlusterFS a client cut off for longer than its
    // timeouts loses its locks without being told; with client.strict-locks on, its locked
    // descriptors then fail (EBADFD), which this notices instead of changing the chain
    // unguarded.
    void verify() const;
    chain_lock(const chain_lock&) = delete;
    chain_lock& operator=(const chain_lock&) = delete;

private:
    sys::fd fd_;
    bool exclusive_;
};

// The right to maintain (re-encode, compress, collect) a chain, exclusive across processes
// and hosts: flock on chains/<id>/work. One host at a time works on a chain; if it dies the
// lock dies with it, and the work is done again by whoever retries it (the queue that
// scheduled it, recovery at the next open, or the periodic sweep of any node).
class chain_work_lock {
public:
    // `wait`: block until it is free; else held() says whether it was taken.
    chain_work_lock(int chain_dir, bool wait);
    ~chain_work_lock();
    chain_work_lock(const chain_work_lock&) = delete;
    chain_work_lock& operator=(const chain_work_lock&) = delete;
    bool held() const { return held_; }

private:
    sys::fd fd_;
    bool held_{false};
};

class chain {
public:
    // Opens chains/<id>; with `key`, creates it first if missing.
    chain(store_context& ctx, std::string id, const std::string* key = nullptr);
    const std::string& id() const { return id_; }
    int dir() const { return dir_.get(); }
    int versions() const { return versions_.get(); }
    int objects() const { return objects_.get(); }
    std::string key() const;
    std::string shown(const std::string& rel) const;

    // Opens a version and its bases (hold a lock while calling). `path` names it in errors.
    std::shared_ptr<const version_reader> open_version(const std::string& vid,
                                                       const std::string& path) const;
    version_record record(const std::string& vid) const;

    struct member {
        version_record rec;
        std::uint32_t links{0}; // 1: no file names it any more
        std::string base;       // from its object's footer
        std::uint64_t uid{0};
        std::uint64_t stored{0};
        bool uncompressed{false};
        std::string error; // set when its record or object could not be read
    };
    // Every version with its object's facts (hold a lock while calling).
    std::vector<member> scan() const;

private:
    store_context& ctx_;
    std::string id_;
    sys::fd dir_, versions_, objects_;
};

} // namespace tpde::store

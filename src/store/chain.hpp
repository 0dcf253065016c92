#pragma once
// One chain's directory: chains/<id>/ with its key, a lock file, versions/<vid> (the version
// records, hard-linked from ns/) and objects/<vid> (each version's current encoding).
#include <memory>
#include <string>
#include <vector>

#include "store/context.hpp"
#include "store/version_reader.hpp"

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

std::string chain_id_for_key(const std::string& key);
std::string new_version_id();

// flock(2) on the chain's lock file: shared to open readers, exclusive to change which
// object a version uses or to delete one. Works across processes on this host (and across
// hosts where the shared filesystem supports flock).
class chain_lock {
public:
    chain_lock(int chain_dir, bool exclusive);
    ~chain_lock();
    chain_lock(const chain_lock&) = delete;
    chain_lock& operator=(const chain_lock&) = delete;

private:
    sys::fd fd_;
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

#include "store/chain.hpp"

#include <chrono>
#include <fcntl.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <random>
#include <sys/file.h>
#include <sys/stat.h>

#include "tpde/util/xxhash.hpp"

namespace tpde::store {

std::string encode_record(const version_record& r) {
    nlohmann::json j{{"tpdefs_record", 1}, {"chain", r.chain_id}, {"version", r.version},
                     {"path", r.path},     {"size", r.size},      {"seq", r.seq}};
    return j.dump() + "\n";
}

namespace {
// A non-negative integer. Anything else is damage, not a value to convert: nlohmann converts
// a negative number silently, and a float (which is what a number too large for 64 bits
// parses as) with undefined behaviour when out of range.
std::uint64_t unsigned_field(const nlohmann::json& j, const char* key, const std::string& shown) {
    const auto& v = j.at(key);
    if (!v.is_number_unsigned())
        throw corrupt_store(
            fmt::format("{}: damaged version record ({} is not an unsigned integer)", shown, key));
    return v.get<std::uint64_t>();
}
} // namespace

version_record parse_record(const std::string& text, const std::string& shown) {
    try {
        auto j = nlohmann::json::parse(text);
        if (unsigned_field(j, "tpdefs_record", shown) != 1)
            throw corrupt_store(shown + ": unknown version record format");
        return {j.at("chain").get<std::string>(), j.at("version").get<std::string>(),
                j.at("path").get<std::string>(), unsigned_field(j, "size", shown),
                unsigned_field(j, "seq", shown)};
    } catch (const nlohmann::json::exception& e) {
        throw corrupt_store(fmt::format("{}: damaged version record ({})", shown, e.what()));
    }
}

std::string chain_id_for_key(const std::string& key) {
    return fmt::format("{:016x}", XXH3_64bits(key.data(), key.size()));
}

std::string new_version_id() {
    static thread_local std::mt19937_64 rng{[] {
        std::random_device rd;
        return (std::uint64_t{rd()} << 32) ^ rd();
    }()};
    auto now = std::chrono::system_clock::now().time_since_epoch();
    return fmt::format("{:016x}-{:016x}",
                       std::chrono::duration_cast<std::chrono::nanoseconds>(now).count(), rng());
}

chain_lock::chain_lock(int chain_dir, bool exclusive) {
    fd_ = sys::open_at(chain_dir, "lock", O_RDONLY, 0, "chain lock");
    while (::flock(fd_.get(), exclusive ? LOCK_EX : LOCK_SH) != 0)
        if (errno != EINTR) sys::fail("cannot lock", "chain lock");
}
chain_lock::~chain_lock() {
    ::flock(fd_.get(), LOCK_UN);
}

namespace {
void mkdir_if_missing(int dirfd, const std::string& rel, const std::string& shown) {
    sys::mutation_point();
    if (::mkdirat(dirfd, rel.c_str(), 0755) != 0 && errno != EEXIST)
        sys::fail("cannot create directory", shown);
}
} // namespace

chain::chain(store_context& ctx, std::string id, const std::string* key)
    : ctx_(ctx), id_(std::move(id)) {
    if (key) {
        struct stat st {};
        if (!sys::stat_at(ctx_.chains_dir.get(), id_ + "/objects", st)) {
            // Built in tmp/ and renamed into place, so a chain directory is always complete.
            auto tmp = ctx_.tmp_name("chain");
            auto shown_tmp = (ctx_.root / "tmp" / tmp).string();
            mkdir_if_missing(ctx_.tmp_dir.get(), tmp, shown_tmp);
            sys::fd d = sys::open_at(ctx_.tmp_dir.get(), tmp, O_RDONLY | O_DIRECTORY, 0, shown_tmp);
            mkdir_if_missing(d.get(), "versions", shown_tmp);
            mkdir_if_missing(d.get(), "objects", shown_tmp);
            sys::open_at(d.get(), "lock", O_WRONLY | O_CREAT, 0644, shown_tmp);
            auto k = sys::open_at(d.get(), "key", O_WRONLY | O_CREAT | O_TRUNC, 0644, shown_tmp);
            sys::write_all(k.get(), std::as_bytes(std::span(*key)), shown_tmp);
            sys::fsync_fd(k.get(), shown_tmp);
            sys::fsync_fd(d.get(), shown_tmp);
            sys::mutation_point();
            if (::renameat2(ctx_.tmp_dir.get(), tmp.c_str(), ctx_.chains_dir.get(), id_.c_str(),
                            RENAME_NOREPLACE) != 0) {
                if (errno != EEXIST && errno != ENOTEMPTY) sys::fail("cannot create chain", id_);
                // Another writer created it first: fine, use theirs.
                for (auto n : {"versions", "objects"})
                    sys::remove_if_exists(d.get(), n, AT_REMOVEDIR);
                for (auto n : {"lock", "key"}) sys::remove_if_exists(d.get(), n);
                sys::remove_if_exists(ctx_.tmp_dir.get(), tmp, AT_REMOVEDIR);
            } else {
                sys::fsync_fd(ctx_.chains_dir.get(), (ctx_.root / "chains").string());
            }
        }
    }
    dir_ = sys::open_at(ctx_.chains_dir.get(), id_, O_RDONLY | O_DIRECTORY, 0, shown(""));
    versions_ = sys::open_at(dir_.get(), "versions", O_RDONLY | O_DIRECTORY, 0, shown("versions"));
    objects_ = sys::open_at(dir_.get(), "objects", O_RDONLY | O_DIRECTORY, 0, shown("objects"));
}

std::string chain::shown(const std::string& rel) const {
    return (ctx_.root / "chains" / id_ / rel).string();
}

std::string chain::key() const {
    return sys::read_small_file(dir(), "key", shown("key"));
}

version_record chain::record(const std::string& vid) const {
    auto where = shown("versions/" + vid);
    return parse_record(sys::read_small_file(versions(), vid, where), where);
}

std::shared_ptr<const version_reader> chain::open_version(const std::string& vid,
                                                          const std::string& path) const {
    // Iteratively from the top: collect the objects down to a standalone one, then build
    // readers bottom-up. A cycle or an absurd depth is corruption, not a stack overflow.
    std::vector<std::shared_ptr<const object_file>> objs;
    std::string next = vid;
    while (!next.empty()) {
        if (objs.size() > 4 * std::max(1u, ctx_.opts.max_read_depth) + 64)
            throw corrupt_store(
                fmt::format("{}: base chain of version {} does not end", path, vid));
        auto where = shown("objects/" + next);
        sys::fd f;
        try {
            f = sys::open_at(objects(), next, O_RDONLY, 0, where);
        } catch (const store_error& e) {
            if (e.error_number() == ENOENT)
                throw corrupt_store(
                    fmt::format("{}: object of version {} is missing ({})", path, next, where));
            throw;
        }
        auto obj = std::make_shared<const object_file>(std::move(f), where);
        next = obj->footer().base_version;
        objs.push_back(std::move(obj));
    }
    std::shared_ptr<const version_reader> r;
    for (auto it = objs.rbegin(); it != objs.rend(); ++it)
        r = std::make_shared<const version_reader>(ctx_, *it, r, path);
    return r;
}

std::vector<chain::member> chain::scan() const {
    std::vector<member> out;
    for (auto& vid : sys::list_dir(versions(), ".")) {
        member m;
        m.rec.version = vid;
        try {
            struct stat st {};
            if (!sys::stat_at(versions(), vid, st)) continue; // removed meanwhile
            m.links = static_cast<std::uint32_t>(st.st_nlink);
            m.rec = record(vid);
            if (m.rec.version != vid)
                throw corrupt_store(shown("versions/" + vid) + ": record names another version");
            auto where = shown("objects/" + vid);
            object_file obj(sys::open_at(objects(), vid, O_RDONLY, 0, where), where);
            m.base = obj.footer().base_version;
            m.uid = obj.footer().uid;
            m.uncompressed = obj.footer().uncompressed;
            m.stored = obj.file_size();
        } catch (const store_error& e) {
            m.error = e.what();
        }
        out.push_back(std::move(m));
    }
    return out;
}

} // namespace tpde::store

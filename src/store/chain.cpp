#include "chain.hpp"

#include <algorithm>
#include <cctype>
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

std::string read_store_file(int dirfd, const std::string& rel, const std::string& shown) {
    try {
        return sys::read_small_file(dirfd, rel, shown);
    } catch (const store_error& e) {
        if (e.error_number() == EFBIG) throw corrupt_store(shown + ": record larger than 1 MiB");
        throw;
    }
}

namespace {

std::vector<std::string> digit_runs(const std::string& s) {
    std::vector<std::string> runs;
    for (std::size_t i = 0; i < s.size();) {
        if (std::isdigit(static_cast<unsigned char>(s[i]))) {
            auto j = i;
            while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
            runs.push_back(s.substr(i, j - i));
            i = j;
        } else {
            ++i;
        }
    }
    return runs;
}

bool has_digits(const std::string& s) {
    return std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}
// The digit runs of the path components that name a rank (mp_rank_01, rank3, pp_rank_0):
// Megatron's iter_0000100/mp_rank_01/model_optim_rng.pt keeps the rank in a directory, so
// the same-file-name rule does not tell ranks apart there.
std::vector<std::string> rank_ids(const std::string& path) {
    std::vector<std::string> ids;
    for (std::size_t start = 0; start <= path.size();) {
        auto end = std::min(path.find('/', start), path.size());
        std::string part = path.substr(start, end - start);
        std::string lower = part;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (lower.find("rank") != std::string::npos)
            for (auto& r : digit_runs(part)) ids.push_back(std::move(r));
        start = end + 1;
    }
    return ids;
}

} // namespace

std::string directory_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? "" : path.substr(0, slash);
}
std::string file_name_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string chain_key_for(const std::string& path) {
    std::string key;
    for (std::size_t i = 0; i < path.size(); ++i) {
        if (std::isdigit(static_cast<unsigned char>(path[i]))) {
            while (i + 1 < path.size() && std::isdigit(static_cast<unsigned char>(path[i + 1])))
                ++i;
            key += '#';
        } else {
            key += path[i];
        }
    }
    return key;
}

bool same_series(const std::string& earlier, const std::string& later) {
    if (has_digits(directory_of(later)) && file_name_of(earlier) != file_name_of(later))
        return false;
    return rank_ids(earlier) == rank_ids(later);
}

std::vector<int> digit_match_score(const std::string& path, const std::string& candidate) {
    auto a = digit_runs(path), b = digit_runs(candidate);
    std::vector<int> score;
    for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        bool eq = i < a.size() && i < b.size() && a[a.size() - 1 - i] == b[b.size() - 1 - i];
        score.push_back(eq ? 1 : 0);
    }
    return score;
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

void chain_lock::verify() const {
    if (::flock(fd_.get(), (exclusive_ ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0)
        sys::fail(errno == EWOULDBLOCK ? EIO : errno, "lost the lock of chain",
                  "(another host holds it now: was this host cut off?)");
}

chain_lock::chain_lock(int chain_dir, bool exclusive) : exclusive_(exclusive) {
    fd_ = sys::open_at(chain_dir, "lock", O_RDONLY, 0, "chain lock");
    if (!sys::flock_within(fd_.get(), exclusive ? LOCK_EX : LOCK_SH, lock_wait_ms))
        throw store_error(EIO, fmt::format("chain lock held for more than {} s (by a host that "
                                           "stopped answering?)",
                                           lock_wait_ms / 1000));
}
chain_lock::~chain_lock() {
    ::flock(fd_.get(), LOCK_UN);
}

chain_work_lock::chain_work_lock(int chain_dir, bool wait) {
    // Created on first use: chains made before there were several nodes have no such file.
    fd_ = sys::open_at(chain_dir, "work", O_RDWR | O_CREAT, 0644, "chain work lock");
    // Waiting, as long as a maintenance task of another node may take (minutes for GBs).
    held_ = sys::flock_within(fd_.get(), LOCK_EX, wait ? 20 * lock_wait_ms : 0);
    if (wait && !held_)
        throw store_error(EIO, "chain work lock held for more than 10 min by another node");
}
chain_work_lock::~chain_work_lock() {
    if (held_) ::flock(fd_.get(), LOCK_UN);
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
            // A plain rename fails onto an existing chain directory, which is never empty
            // (RENAME_NOREPLACE would say so more directly, but GlusterFS refuses it: EINVAL).
            if (::renameat(ctx_.tmp_dir.get(), tmp.c_str(), ctx_.chains_dir.get(), id_.c_str()) !=
                0) {
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
    return read_store_file(dir(), "key", shown("key"));
}

version_record chain::record(const std::string& vid) const {
    auto where = shown("versions/" + vid);
    return parse_record(read_store_file(versions(), vid, where), where);
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

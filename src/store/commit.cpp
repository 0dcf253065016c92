// The commit protocol: how a new version becomes the content of a path, atomically and
// durably, even against a concurrent rename or unlink of that path.
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fmt/core.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "maintenance.hpp"
#include "store_impl.hpp"

namespace tpde::store {
namespace {

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

} // namespace

std::string store_impl::publish(const std::string& path, const std::string& expected,
                                object_encoder& enc, std::uint64_t size) {
    return publish_new(path, expected, enc, size, 0644);
}

// The commit protocol (each step durable before the next; a crash anywhere leaves the old
// or the new file): object linked into its chain (its tmp/ name kept until the record names
// it); record written and fsynced in tmp/, then linked into the chain's versions/; then
// renamed over the path, under the path's lock across hosts. Leftovers of an interrupted
// commit are files in the node's tmp/ and an unnamed version, removed by the node's next
// open (or by fsck --repair, for a node that never comes back).
std::string store_impl::publish_new(const std::string& path, const std::string& expected,
                                    object_encoder& enc, std::uint64_t size, std::uint32_t mode) {
    auto rel = ns_rel(path);
    auto key = chain_key_for(path);
    chain c(ctx_, chain_id_for_key(key), &key);
    auto vid = new_version_id();
    enc.writer().publish_linked(c.objects(), vid);
    sys::fsync_fd(c.objects(), c.shown("objects"));

    auto text = encode_record({c.id(), vid, path, size, now_ns()});
    auto tmp = ctx_.tmp_name("record");
    auto rec = sys::open_at(ctx_.tmp_dir.get(), tmp, O_RDWR | O_CREAT | O_EXCL, 0600, full(path));
    sys::write_all(rec.get(), std::as_bytes(std::span(text)), full(path));
    sys::fsync_fd(rec.get(), full(path));
    sys::link_at(ctx_.tmp_dir.get(), tmp, c.versions(), vid, c.shown("versions/" + vid));
    sys::fsync_fd(c.versions(), c.shown("versions"));
    enc.writer().drop_temporary_name();
    struct stat obj {};
    if (!sys::stat_at(c.objects(), vid, obj)) {
        // Only if another node took this one for dead (fsck --repair while it was frozen)
        // and removed the object as garbage: nothing is committed.
        sys::unlink_at(c.versions(), vid, 0, c.shown("versions/" + vid));
        sys::remove_if_exists(ctx_.tmp_dir.get(), tmp);
        throw store_error(EIO, fmt::format("{}: not committed: its object was removed meanwhile "
                                           "(was this node taken for dead?)",
                                           path));
    }

    bool named = false;
    std::string replaced_chain;
    try {
        std::lock_guard lock(ns_mutex_);
        ns_locks::guard across_hosts(ns_locks_, {rel});
        if (!expected.empty()) {
            struct stat st {};
            std::optional<version_record> current;
            try {
                current = read_record(rel, path, st);
            } catch (const store_error& e) {
                if (e.error_number() != ENOENT) throw;
            }
            if (current && current->version == expected) {
                // The new version keeps the file's mode and extended attributes.
                sys::mutation_point();
                if (::fchmod(rec.get(), st.st_mode & 07777) != 0)
                    sys::fail("cannot chmod", full(path));
                for (auto& name : listxattr(path)) {
                    auto v = getxattr(path, name);
                    if (::fsetxattr(rec.get(), name.c_str(), v.data(), v.size(), 0) != 0)
                        spdlog::warn("{}: attribute {} not kept: {}", path, name,
                                     std::strerror(errno));
                }
                replaced_chain = current->chain_id;
                sys::rename_at(ctx_.tmp_dir.get(), tmp, ctx_.ns_dir.get(), rel, 0, full(path));
                named = true;
            }
        } else {
            sys::mutation_point();
            if (::fchmod(rec.get(), mode & 07777) != 0) sys::fail("cannot chmod", full(path));
            // Named only if the path is free: link() fails with EEXIST otherwise, atomically
            // on every filesystem the store supports (GlusterFS refuses RENAME_NOREPLACE).
            sys::mutation_point();
            if (::linkat(ctx_.tmp_dir.get(), tmp.c_str(), ctx_.ns_dir.get(), rel.c_str(), 0) == 0) {
                named = true;
                sys::unlink_at(ctx_.tmp_dir.get(), tmp, 0, full(path));
            } else if (errno != EEXIST) {
                sys::fail("cannot create", path);
            }
        }
    } catch (const sys::injected_crash&) {
        throw;
    } catch (...) {
        sys::remove_if_exists(ctx_.tmp_dir.get(), tmp);
        maintenance_->schedule({maintenance_task::kind::collect, c.id(), {}});
        throw;
    }
    if (!named) {
        sys::remove_if_exists(ctx_.tmp_dir.get(), tmp);
        maintenance_->schedule({maintenance_task::kind::collect, c.id(), {}});
        return {};
    }
    sys::fsync_fd(rec.get(), full(path)); // the mode and attributes copied under the lock
    sys::fsync_dir(ctx_.ns_dir.get(), parent_rel(rel), full(path));
    ctx_.counters.commits++;
    ctx_.counters.bytes_committed += size;
    if (size > 0) maintenance_->schedule({maintenance_task::kind::compact, c.id(), vid});
    if (!replaced_chain.empty())
        maintenance_->schedule({maintenance_task::kind::collect, replaced_chain, {}});
    return vid;
}

} // namespace tpde::store

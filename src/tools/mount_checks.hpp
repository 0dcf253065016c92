#pragma once
// What tpdefs checks before it mounts, and undoes when a mount fails.
#include <filesystem>
#include <string>

namespace tpde::tools {

// MOUNTPOINT made absolute with symlinks resolved. Throws std::runtime_error, saying what to
// do, when it is missing or not a directory, and, unless `nonempty`, when it is already a
// mount point (mounting would hide that mount) or is not empty (mounting would hide its
// files). A mount point is found in /proc/self/mountinfo and never stat()ed: a hung FUSE
// daemon would not answer. An automount point (autofs) is fine: it is how systemd's
// x-systemd.automount mounts us.
std::string check_mountpoint(const std::string& mountpoint, bool nonempty);

// Whether /etc/fuse.conf lets a user mount with allow_other (a line `user_allow_other`).
bool fuse_conf_allows_other(const std::string& conf = "/etc/fuse.conf");

// A mount that fails must not leave behind a store it created: records, before the store is
// opened (which creates a missing or empty STORE), whether STORE exists; remove_created()
// then removes what the store's creation made (and the directories made for it), and only
// if STORE was missing or an empty directory before.
class new_store_cleanup {
public:
    explicit new_store_cleanup(const std::filesystem::path& store);
    void remove_created() noexcept;

private:
    std::filesystem::path store_;
    std::filesystem::path first_created_; // the outermost directory that did not exist
    bool applies_{false};
};

} // namespace tpde::tools

// The FUSE logic (src/fs/filesystem) driven in process on a temporary store, without a
// mount: the calls fuse_ops.cpp makes for each request, and the errno each failure carries.
#include <algorithm>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/xattr.h>

#include "../../src/fs/filesystem.hpp"
#include "store_test_util.hpp"

using namespace tpde;
using tpde::fs::node_table;

namespace {

std::vector<std::byte> bytes_of(const std::string& s) {
    auto b = std::as_bytes(std::span(s));
    return {b.begin(), b.end()};
}
std::string text_of(std::span<const std::byte> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// The errno a call fails with (0: it did not fail).
template <typename F>
int errno_of(F&& f) {
    try {
        f();
    } catch (const store::store_error& e) {
        return e.error_number();
    }
    return 0;
}

class FilesystemTest : public ::testing::Test {
protected:
    FilesystemTest() {
        store::store_options o;
        o.encode_threads = 1;
        o.cache.max_bytes = 8u << 20;
        s = store::store::open(dir.path() / "store", o);
        f = std::make_unique<fs::filesystem>(*s);
    }
    // create + write + release: what `open(O_CREAT|O_WRONLY), write, close` sends.
    std::uint64_t write_file(std::uint64_t parent, const std::string& name,
                             std::span<const std::byte> data) {
        auto [e, h] = f->create(parent, name, 0644, O_WRONLY | O_CREAT | O_TRUNC);
        EXPECT_EQ(f->write(*h, 0, data), data.size());
        f->flush(*h);
        f->release(std::move(h));
        return e.node;
    }
    std::vector<std::byte> read_all(std::uint64_t node) {
        bool keep = false;
        auto h = f->open(node, O_RDONLY, keep);
        std::vector<std::byte> out(f->getattr(node).st_size);
        std::size_t n = f->read(*h, 0, out);
        out.resize(n);
        f->release(std::move(h));
        return out;
    }

    test::temp_dir dir;
    std::unique_ptr<store::store> s;
    std::unique_ptr<fs::filesystem> f;
};

} // namespace

TEST_F(FilesystemTest, CreateWriteReadBackBitExact) {
    auto traj = test::trajectory(3);
    std::vector<std::uint64_t> nodes;
    for (std::size_t i = 0; i < traj.size(); ++i)
        nodes.push_back(write_file(node_table::root_id, "ckpt-" + std::to_string(i), traj[i]));
    s->wait_idle(); // inline maintenance: the older ones are deltas now
    for (std::size_t i = 0; i < traj.size(); ++i) {
        EXPECT_EQ(read_all(nodes[i]), traj[i]) << i;
        EXPECT_EQ(static_cast<std::size_t>(f->getattr(nodes[i]).st_size), traj[i].size());
    }
    auto e = f->lookup(node_table::root_id, "ckpt-1");
    EXPECT_EQ(e.node, nodes[1]); // a node keeps its id while the kernel knows it
    auto parent = f->getxattr(nodes[0], "user.tpde.parent");
    EXPECT_EQ(text_of(parent), "ckpt-1"); // reverse deltas: the older against the newer
}

TEST_F(FilesystemTest, WritesVisibleThroughOtherHandlesBeforeCommit) {
    auto [e, w] = f->create(node_table::root_id, "a", 0644, O_RDWR | O_CREAT);
    auto data = bytes_of("hello, world");
    f->write(*w, 0, data);
    bool keep = true;
    auto r = f->open(e.node, O_RDONLY, keep);
    EXPECT_FALSE(keep); // written through us: the kernel must not keep stale pages
    std::vector<std::byte> out(64);
    EXPECT_EQ(f->read(*r, 0, out), data.size());
    EXPECT_EQ(f->getattr(e.node).st_size, static_cast<off_t>(data.size()));
    f->release(std::move(w));
    f->release(std::move(r));
    EXPECT_EQ(read_all(e.node), data);
}

TEST_F(FilesystemTest, RenameWhileOpenCommitsUnderTheNewName) {
    auto [e, h] = f->create(node_table::root_id, "tmp.pt", 0644, O_WRONLY | O_CREAT);
    auto data = test::trajectory(1)[0];
    f->write(*h, 0, data);
    f->rename(node_table::root_id, "tmp.pt", node_table::root_id, "final.pt", 0);
    f->release(std::move(h));
    EXPECT_EQ(errno_of([&] { f->lookup(node_table::root_id, "tmp.pt"); }), ENOENT);
    auto moved = f->lookup(node_table::root_id, "final.pt");
    EXPECT_EQ(moved.node, e.node);
    EXPECT_EQ(read_all(moved.node), data);
    EXPECT_EQ(s->stat("final.pt").size, data.size());
}

TEST_F(FilesystemTest, UnlinkWhileOpenKeepsTheOpenFileReadable) {
    auto data = test::trajectory(1)[0];
    auto node = write_file(node_table::root_id, "old.pt", data);
    bool keep = false;
    auto r = f->open(node, O_RDONLY, keep);
    f->unlink(node_table::root_id, "old.pt");
    EXPECT_EQ(errno_of([&] { f->lookup(node_table::root_id, "old.pt"); }), ENOENT);
    std::vector<std::byte> out(data.size());
    EXPECT_EQ(f->read(*r, 0, out), data.size());
    EXPECT_EQ(out, data);
    EXPECT_EQ(f->getattr(node).st_nlink, 0u);
    f->release(std::move(r));
    f->forget(node, 1);
    EXPECT_EQ(errno_of([&] { f->getattr(node); }), ENOENT);
}

TEST_F(FilesystemTest, WriterOfAnUnlinkedFileCommitsNothing) {
    auto [e, h] = f->create(node_table::root_id, "gone", 0644, O_WRONLY | O_CREAT);
    f->unlink(node_table::root_id, "gone");
    f->write(*h, 0, bytes_of("data nobody can name"));
    f->release(std::move(h));
    EXPECT_EQ(errno_of([&] { s->stat("gone"); }), ENOENT);
}

TEST_F(FilesystemTest, SetattrTruncatesChmodsAndRefusesOwnerChanges) {
    auto node = write_file(node_table::root_id, "f", bytes_of("0123456789"));
    fs::attr_change shrink;
    shrink.size = 4;
    EXPECT_EQ(f->setattr(node, shrink, nullptr).st_size, 4);
    EXPECT_EQ(text_of(read_all(node)), "0123");
    fs::attr_change mode;
    mode.mode = 0600;
    EXPECT_EQ(f->setattr(node, mode, nullptr).st_mode & 07777, 0600u);
    fs::attr_change times;
    times.mtime = timespec{1234567, 0};
    EXPECT_EQ(f->setattr(node, times, nullptr).st_mtim.tv_sec, 1234567);
    fs::attr_change owner;
    owner.uid = f->getattr(node).st_uid + 1;
    EXPECT_EQ(errno_of([&] { f->setattr(node, owner, nullptr); }), EPERM);
}

TEST_F(FilesystemTest, DirectoriesAndListings) {
    auto d = f->mkdir(node_table::root_id, "checkpoint-100", 0755);
    EXPECT_TRUE(S_ISDIR(d.attr.st_mode));
    write_file(d.node, "model.pt", bytes_of("weights"));
    auto l = f->opendir(d.node);
    ASSERT_EQ(l.entries.size(), 3u);
    EXPECT_EQ(l.entries[0].name, ".");
    EXPECT_EQ(l.entries[2].name, "model.pt");
    EXPECT_EQ(errno_of([&] { f->rmdir(node_table::root_id, "checkpoint-100"); }), ENOTEMPTY);
    f->unlink(d.node, "model.pt");
    f->rmdir(node_table::root_id, "checkpoint-100");
    EXPECT_EQ(errno_of([&] { f->lookup(node_table::root_id, "checkpoint-100"); }), ENOENT);
    bool keep = false;
    EXPECT_EQ(errno_of([&] { f->open(node_table::root_id, O_RDONLY, keep); }), EISDIR);
}

TEST_F(FilesystemTest, ErrorsCarryTheirErrno) {
    write_file(node_table::root_id, "x", bytes_of("x"));
    EXPECT_EQ(errno_of([&] { f->lookup(node_table::root_id, "missing"); }), ENOENT);
    EXPECT_EQ(errno_of([&] { f->create(node_table::root_id, "x", 0644, O_WRONLY | O_EXCL); }),
              EEXIST);
    EXPECT_EQ(errno_of([&] { f->mkdir(node_table::root_id, std::string(300, 'n'), 0755); }),
              ENAMETOOLONG);
    EXPECT_EQ(errno_of([&] { f->lookup(node_table::root_id, ".."); }), EINVAL);
    bool keep = false;
    auto node = f->lookup(node_table::root_id, "x").node;
    auto r = f->open(node, O_RDONLY, keep);
    EXPECT_EQ(errno_of([&] { f->write(*r, 0, bytes_of("y")); }), EBADF);
    f->release(std::move(r));
    EXPECT_EQ(
        errno_of([&] { f->rename(node_table::root_id, "missing", node_table::root_id, "y", 0); }),
        ENOENT);
}

TEST_F(FilesystemTest, ExtendedAttributesAndVirtualOnes) {
    auto data = test::trajectory(1)[0];
    auto node = write_file(node_table::root_id, "m.safetensors", data);
    f->setxattr(node, "user.note", bytes_of("kept"), 0);
    EXPECT_EQ(text_of(f->getxattr(node, "user.note")), "kept");
    auto names = f->listxattr(node);
    EXPECT_NE(std::find(names.begin(), names.end(), "user.note"), names.end());
    EXPECT_EQ(errno_of([&] { f->setxattr(node, "user.note", bytes_of("x"), XATTR_CREATE); }),
              EEXIST);
    f->removexattr(node, "user.note");
    EXPECT_EQ(errno_of([&] { f->getxattr(node, "user.note"); }), ENODATA);
    // Maintained by tpdefs: readable, never writable.
    EXPECT_EQ(std::stoull(text_of(f->getxattr(node, "user.tpde.logical_size"))), data.size());
    EXPECT_GT(std::stod(text_of(f->getxattr(node, "user.tpde.ratio"))), 0.0);
    EXPECT_EQ(errno_of([&] { f->setxattr(node, "user.tpde.ratio", bytes_of("9"), 0); }), EPERM);
    EXPECT_EQ(errno_of([&] { f->removexattr(node, "user.tpde.ratio"); }), EPERM);
    EXPECT_EQ(errno_of([&] { f->getxattr(node, "user.tpde.nonsense"); }), ENODATA);
}

TEST_F(FilesystemTest, VirtualAttributesAreListedAndReadable) {
    auto traj = test::trajectory(2);
    write_file(node_table::root_id, "ckpt-1", traj[0]);
    auto node = write_file(node_table::root_id, "ckpt-2", traj[1]);
    auto older = f->lookup(node_table::root_id, "ckpt-1").node;
    s->wait_idle(); // ckpt-1 is a delta against ckpt-2 now
    f->setxattr(node, "user.note", bytes_of("kept"), 0);
    auto names = f->listxattr(node);
    std::sort(names.begin(), names.end());
    const std::vector<std::string> expected = {
        "user.note",       "user.tpde.chain",        "user.tpde.changed_fraction",
        "user.tpde.depth", "user.tpde.logical_size", "user.tpde.parent",
        "user.tpde.ratio", "user.tpde.stored_size",  "user.tpde.version"};
    EXPECT_EQ(names, expected);
    for (auto& n : names) EXPECT_EQ(errno_of([&] { f->getxattr(node, n); }), 0) << n;
    // The old name reads the same value, and is not listed.
    auto changed = text_of(f->getxattr(older, "user.tpde.changed_fraction"));
    EXPECT_EQ(text_of(f->getxattr(older, "user.tpde.sparsity")), changed);
    EXPECT_GE(std::stod(changed), 0.0);
    EXPECT_LE(std::stod(changed), 1.0);
    EXPECT_EQ(text_of(f->getxattr(older, "user.tpde.parent")), "ckpt-2");
    // The root: the mount's counters; a directory: only its own attributes.
    auto root = f->listxattr(node_table::root_id);
    EXPECT_NE(std::find(root.begin(), root.end(), "user.tpde.stats"), root.end());
    EXPECT_NE(std::find(root.begin(), root.end(), "user.tpde.maintenance_pending"), root.end());
    EXPECT_EQ(text_of(f->getxattr(node_table::root_id, "user.tpde.maintenance_pending")), "0");
    auto d = f->mkdir(node_table::root_id, "dir", 0755);
    EXPECT_TRUE(f->listxattr(d.node).empty());
    // Log lines name paths in the mount.
    EXPECT_EQ(f->describe(node_table::root_id), "/");
    EXPECT_EQ(f->describe(node_table::root_id, "x"), "/x");
    EXPECT_EQ(f->describe(d.node, "y"), "/dir/y");
}

TEST_F(FilesystemTest, MountStatsCountWhatWentThrough) {
    auto data = test::trajectory(1)[0];
    auto node = write_file(node_table::root_id, "a", data);
    read_all(node);
    auto j = nlohmann::json::parse(text_of(f->getxattr(node_table::root_id, "user.tpde.stats")));
    EXPECT_EQ(j["bytes_written_to_mount"].get<std::uint64_t>(), data.size());
    EXPECT_EQ(j["bytes_read_from_mount"].get<std::uint64_t>(), data.size());
    EXPECT_EQ(j["commits"].get<std::uint64_t>(), 2u); // create's empty version, then the data
    EXPECT_EQ(j["bytes_committed"].get<std::uint64_t>(), data.size());
    EXPECT_EQ(j["cache"]["max_bytes"].get<std::uint64_t>(), 8u << 20);
    EXPECT_EQ(j["files"].get<std::uint64_t>(), 1u);
    EXPECT_EQ(j["logical_bytes"].get<std::uint64_t>(), data.size());
}

TEST_F(FilesystemTest, ShutdownCommitsFilesStillOpen) {
    auto [e, h] = f->create(node_table::root_id, "open-at-unmount", 0644, O_WRONLY | O_CREAT);
    auto data = bytes_of("committed by shutdown");
    f->write(*h, 0, data);
    f->shutdown();
    EXPECT_EQ(s->stat("open-at-unmount").size, data.size());
    f->release(std::move(h));
    auto r = s->open_reader("open-at-unmount");
    std::vector<std::byte> out(data.size());
    EXPECT_EQ(r->read(0, out), data.size());
    EXPECT_EQ(out, data);
}

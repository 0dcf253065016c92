// Several writable processes ("nodes") over one store, as the daemons of a cluster share a
// store on a shared filesystem: here several store objects of one test process, each with a
// node name of its own, on a local directory (tests/cluster runs the same over GlusterFS).
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <thread>

#include "../../src/store/chain.hpp"
#include "store_test_util.hpp"
#include "tpde/store/store.hpp"

using namespace tpde;
using namespace tpde::test;

namespace {

std::unique_ptr<store::store> open_node(const std::filesystem::path& root, const std::string& node,
                                        bool background = false) {
    store::store_options o;
    o.node = node;
    o.block_size = 32u << 10;
    o.encode_threads = 1;
    o.cache.max_bytes = 8u << 20;
    o.background_maintenance = background;
    return store::store::open(root, o);
}

int errno_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const store::store_error& e) {
        return e.error_number();
    }
    return 0;
}

std::size_t entries_in(const std::filesystem::path& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
    return n;
}

} // namespace

TEST(StoreNodes, NodeNamesAreCheckedAndDefaultToTheHostName) {
    temp_dir d;
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    EXPECT_EQ(store::store::node_name({}).substr(0, 3), std::string(host).substr(0, 3));
    for (const std::string& bad :
         {std::string("a/b"), std::string(".."), std::string("x y"), std::string(65, 'n')}) {
        store::store_options o;
        o.node = bad;
        EXPECT_EQ(errno_of([&] { store::store::open(d.path() / "s", o); }), EINVAL) << bad;
    }
}

TEST(StoreNodes, SeveralWritersShareAStoreAndReadEachOther) {
    temp_dir d;
    auto traj = trajectory(4);
    auto a = open_node(d.path() / "s", "a");
    auto b = open_node(d.path() / "s", "b");
    // Alternate nodes along one chain (a job that moved hosts) and in chains of their own.
    a->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        (i % 2 ? *b : *a).mkdir("run/checkpoint-" + std::to_string(i), 0755);
        auto& s = i % 2 ? *b : *a;
        write_file(s, "run/checkpoint-" + std::to_string(i) + "/model.safetensors", traj[i]);
        write_file(s, (i % 2 ? "b-only-" : "a-only-") + std::to_string(i), traj[i]);
    }
    for (std::size_t i = 0; i < traj.size(); ++i) {
        auto p = "run/checkpoint-" + std::to_string(i) + "/model.safetensors";
        EXPECT_EQ(read_file(*a, p), traj[i]) << p;
        EXPECT_EQ(read_file(*b, p), traj[i]) << p;
    }
    // One chain, whichever node committed: the older versions are deltas.
    EXPECT_FALSE(a->info("run/checkpoint-0/model.safetensors").base.empty());
    auto ro_opts = store::store_options{};
    ro_opts.read_only = true;
    auto reader = store::store::open(d.path() / "s", ro_opts); // beside the writers
    EXPECT_EQ(read_file(*reader, "b-only-3"), traj[3]);
    auto report = reader->fsck(false);
    EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems.front());
}

TEST(StoreNodes, OneProcessPerNodeName) {
    temp_dir d;
    auto a = open_node(d.path() / "s", "a");
    try {
        open_node(d.path() / "s", "a");
        FAIL() << "node a opened twice";
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), EBUSY);
        EXPECT_NE(std::string(e.what()).find("node a"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(open_node(d.path() / "s", "b"));
}

TEST(StoreNodes, RecoveryTouchesOnlyItsOwnNodesWork) {
    temp_dir d;
    const auto root = d.path() / "s";
    auto b = open_node(root, "b");
    // Node b's work in progress: a staging file, and a committed-looking object that its
    // commit still holds a second link to.
    { std::ofstream(root / "tmp" / "b" / "staging-1-00000000000000aa") << "half a file"; }
    write_file(*b, "f", random_bytes(5000, 1));
    auto chain_id = b->info("f").chain_id;
    auto objects = root / "chains" / chain_id / "objects";
    { std::ofstream(objects / "in-flight") << "object"; }
    std::filesystem::create_hard_link(objects / "in-flight", root / "tmp" / "b" / "obj-held");
    { std::ofstream(objects / "orphan") << "object of a commit that died"; }
    // Node a's own leftovers from an earlier crash.
    std::filesystem::create_directories(root / "tmp" / "a");
    { std::ofstream(root / "tmp" / "a" / "record-1-00000000000000bb") << "{}"; }

    store::recovery_report rep;
    store::store_options o;
    o.node = "a";
    auto a = store::store::open(root, o, &rep);
    EXPECT_EQ(entries_in(root / "tmp" / "a"), 0u);
    EXPECT_EQ(entries_in(root / "tmp" / "b"), 2u); // b is running: its work is its own
    EXPECT_TRUE(std::filesystem::exists(objects / "in-flight"));
    EXPECT_FALSE(std::filesystem::exists(objects / "orphan")); // nobody's
    EXPECT_EQ(read_file(*a, "f"), random_bytes(5000, 1));
    EXPECT_TRUE(a->fsck(false).ok()) << a->fsck(false).problems.front();

    // b stops and never comes back: fsck names its leftovers, --repair reclaims them.
    b.reset();
    auto report = a->fsck(false);
    EXPECT_FALSE(report.ok());
    bool named = false;
    for (auto& p : report.problems) named |= p.find("tmp/b/") != std::string::npos;
    EXPECT_TRUE(named);
    auto repaired = a->fsck(true);
    EXPECT_TRUE(repaired.ok()) << repaired.problems.front();
    EXPECT_EQ(entries_in(root / "tmp" / "b"), 0u);
    EXPECT_FALSE(std::filesystem::exists(objects / "in-flight")); // its commit never finished
    EXPECT_EQ(read_file(*a, "f"), random_bytes(5000, 1));
}

TEST(StoreNodes, ConcurrentCommitsToOnePathOneWinsNothingTorn) {
    temp_dir d;
    auto a = open_node(d.path() / "s", "a");
    auto b = open_node(d.path() / "s", "b");
    auto x = random_bytes(300000, 7), y = random_bytes(300000, 8);
    write_file(*a, "last.ckpt", random_bytes(1000, 9));
    for (int round = 0; round < 20; ++round) {
        std::thread ta([&] {
            auto w = a->open_writer("last.ckpt", true);
            w->write(0, x);
            w->commit();
        });
        std::thread tb([&] {
            auto w = b->open_writer("last.ckpt", true);
            w->write(0, y);
            w->commit();
        });
        ta.join();
        tb.join();
        auto got = read_file(*a, "last.ckpt");
        EXPECT_TRUE(got == x || got == y) << "round " << round;
        EXPECT_EQ(read_file(*b, "last.ckpt"), got);
    }
    a->wait_idle();
    b->wait_idle();
    a->collect_garbage();
    auto report = a->fsck(false);
    EXPECT_TRUE(report.ok()) << report.problems.front();
}

TEST(StoreNodes, MaintenanceOfAChainWaitsForTheNodeWorkingOnIt) {
    temp_dir d;
    const auto root = d.path() / "s";
    auto traj = trajectory(2);
    auto a = open_node(root, "a", true);
    a->mkdir("run", 0755);
    write_file(*a, "run/step-1.safetensors", traj[0]);
    a->wait_idle();
    auto chain_id = a->info("run/step-1.safetensors").chain_id;
    auto dir = ::open((root / "chains" / chain_id).c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(dir, 0);
    {
        // Another node maintains this chain: a's compaction after the next commit waits.
        store::chain_work_lock elsewhere(dir, true);
        write_file(*a, "run/step-2.safetensors", traj[1]);
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        EXPECT_GE(a->counters().maintenance_pending, 1u);
        EXPECT_TRUE(a->info("run/step-1.safetensors").base.empty()); // not re-encoded yet
    }
    a->wait_idle();
    EXPECT_EQ(a->info("run/step-1.safetensors").base_path, "run/step-2.safetensors");
    EXPECT_EQ(read_file(*a, "run/step-1.safetensors"), traj[0]);
    ::close(dir);
}

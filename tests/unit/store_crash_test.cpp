// Simulated crashes: the n-th mutating system call of an operation fails, and every one
// after it (the process is dead), for every n until the operation completes. Reopening the
// store must then find every file either as it was before or as the operation left it,
// nothing committed lost, and fsck clean.
#include "store_test_util.hpp"
#include "tpde/util/sys.hpp"

using namespace tpde;
using namespace tpde::test;

namespace {

store::store_options opts() {
    store::store_options o;
    o.block_size = 16u << 10;
    o.encode_threads = 1;
    return o;
}

std::string ckpt(std::size_t i) {
    return "checkpoint-" + std::to_string(i) + ".safetensors";
}

bool is_one_of(const std::vector<std::byte>& got,
               std::initializer_list<const std::vector<std::byte>*> options) {
    for (auto* o : options)
        if (got == *o) return true;
    return false;
}

std::optional<std::vector<std::byte>> read_if_exists(store::store& s, const std::string& path) {
    try {
        return read_file(s, path);
    } catch (const store::store_error& e) {
        if (e.error_number() == ENOENT) return std::nullopt;
        throw;
    }
}

enum class scenario { new_file_in_chain, rewrite_in_place, delete_oldest, delete_newest };

// Runs `op` with a crash after each mutating call in turn; returns how many crash points
// there were.
template <typename Setup, typename Op, typename Check>
int crash_everywhere(Setup setup, Op op, Check check) {
    for (int n = 0; n < 10000; ++n) {
        temp_dir d;
        auto root = d.path() / "s";
        {
            auto s = store::store::open(root, opts());
            setup(*s);
        }
        bool crashed = false;
        {
            auto s = store::store::open(root, opts());
            util::sys::arm_crash_after(n);
            try {
                op(*s);
            } catch (const util::sys::injected_crash&) {
                crashed = true;
            }
            if (!crashed) util::sys::disarm_crash();
            // The "dead" process's objects go away here without doing any more I/O.
        }
        util::sys::disarm_crash();
        store::recovery_report rep;
        auto s = store::store::open(root, opts(), &rep);
        check(*s, crashed);
        auto f = s->fsck(false);
        EXPECT_TRUE(f.ok()) << "crash after " << n
                            << " calls: " << (f.problems.empty() ? "" : f.problems.front());
        if (::testing::Test::HasFailure()) return n;
        if (!crashed) return n;
    }
    ADD_FAILURE() << "operation never completed";
    return -1;
}

} // namespace

TEST(StoreCrash, NewFileInChain) {
    auto traj = trajectory(3, 6000, 2);
    int points = crash_everywhere(
        [&](store::store& s) {
            write_file(s, ckpt(0), traj[0]);
            write_file(s, ckpt(1), traj[1]);
        },
        [&](store::store& s) { write_file(s, ckpt(2), traj[2]); },
        [&](store::store& s, bool crashed) {
            EXPECT_EQ(read_file(s, ckpt(0)), traj[0]);
            EXPECT_EQ(read_file(s, ckpt(1)), traj[1]);
            auto got = read_if_exists(s, ckpt(2));
            static const std::vector<std::byte> empty;
            if (!crashed) {
                ASSERT_TRUE(got);
                EXPECT_EQ(*got, traj[2]);
            } else if (got) {
                EXPECT_TRUE(is_one_of(*got, {&empty, &traj[2]})) << "a mix of versions";
            }
        });
    EXPECT_GT(points, 15) << "the commit path should have many crash points";
}

TEST(StoreCrash, RewriteInPlace) {
    auto traj = trajectory(3, 6000, 2);
    crash_everywhere(
        [&](store::store& s) {
            write_file(s, "last.ckpt", traj[0]);
            std::string v = "kept";
            s.setxattr("last.ckpt", "user.note", std::as_bytes(std::span(v)), 0);
        },
        [&](store::store& s) {
            auto w = s.open_writer("last.ckpt", true);
            w->write(0, traj[1]);
            w->commit();
        },
        [&](store::store& s, bool crashed) {
            auto got = read_file(s, "last.ckpt");
            if (!crashed) {
                EXPECT_EQ(got, traj[1]);
            } else {
                EXPECT_TRUE(is_one_of(got, {&traj[0], &traj[1]})) << "a mix of versions";
            }
            EXPECT_EQ(s.getxattr("last.ckpt", "user.note").size(), 4u);
        });
}

TEST(StoreCrash, DeleteOldest) {
    auto traj = trajectory(3, 6000, 2);
    crash_everywhere(
        [&](store::store& s) {
            for (std::size_t i = 0; i < 3; ++i) write_file(s, ckpt(i), traj[i]);
        },
        [&](store::store& s) { s.unlink(ckpt(0)); },
        [&](store::store& s, bool crashed) {
            auto got = read_if_exists(s, ckpt(0));
            if (!crashed) {
                EXPECT_FALSE(got);
            } else if (got) {
                EXPECT_EQ(*got, traj[0]);
            }
            for (std::size_t i = 1; i < 3; ++i) EXPECT_EQ(read_file(s, ckpt(i)), traj[i]);
        });
}

TEST(StoreCrash, DeleteNewestRebasesTheOthers) {
    auto traj = trajectory(3, 6000, 2);
    crash_everywhere(
        [&](store::store& s) {
            for (std::size_t i = 0; i < 3; ++i) write_file(s, ckpt(i), traj[i]);
        },
        [&](store::store& s) { s.unlink(ckpt(2)); },
        [&](store::store& s, bool crashed) {
            auto got = read_if_exists(s, ckpt(2));
            if (!crashed) {
                EXPECT_FALSE(got);
            } else if (got) {
                EXPECT_EQ(*got, traj[2]);
            }
            for (std::size_t i = 0; i < 2; ++i) EXPECT_EQ(read_file(s, ckpt(i)), traj[i]);
        });
}

// A write that fails midway (a full disk, say) must not leave an object that lists blocks it
// lacks: later writes and the commit fail with an error, and the committed version stays.
TEST(StoreFailure, FailedWriteIsNeverCommitted) {
    auto traj = trajectory(2, 300000, 3);
    temp_dir d;
    store::store_options o; // 128 KiB blocks: raw blocks are gathered into one write
    o.encode_threads = 1;
    auto root = d.path() / "s";
    {
        auto s = store::store::open(root, o);
        write_file(*s, "last.ckpt", traj[0]);
        auto w = s->open_writer("last.ckpt", true);
        const std::size_t mib = 1u << 20;
        w->write(0, std::span(traj[1]).subspan(0, mib));
        util::sys::arm_crash_after(0); // the next write system call fails
        EXPECT_THROW(w->write(mib, std::span(traj[1]).subspan(mib, mib)), std::exception);
        util::sys::disarm_crash();
        try {
            w->write(2 * mib, std::span(traj[1]).subspan(2 * mib));
            w->commit();
            ADD_FAILURE() << "a writer whose write failed committed";
        } catch (const store::store_error& e) {
            EXPECT_EQ(e.error_number(), EIO);
            EXPECT_NE(std::string(e.what()).find("earlier write failed"), std::string::npos)
                << e.what();
        }
        EXPECT_EQ(read_file(*s, "last.ckpt"), traj[0]);
    }
    auto s = store::store::open(root, o);
    EXPECT_EQ(read_file(*s, "last.ckpt"), traj[0]);
    auto f = s->fsck(false);
    EXPECT_TRUE(f.ok()) << (f.problems.empty() ? "" : f.problems.front());
}

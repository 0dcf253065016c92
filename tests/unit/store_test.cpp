// The chain store without a mount: commit/read round trips, rotation that frees space,
// bounded read depth, namespace semantics, corruption reports, concurrency.
#include <algorithm>
#include <fcntl.h>
#include <fmt/core.h>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sys/xattr.h>
#include <thread>

#include "../../src/store/object_file.hpp"
#include "store_test_util.hpp"
#include "tpde/store/store.hpp"

using namespace tpde;
using namespace tpde::test;

namespace {

store::store_options small_blocks() {
    store::store_options o;
    o.block_size = 32u << 10;
    o.encode_threads = 2;
    o.cache.max_bytes = 8u << 20;
    return o;
}

std::string ckpt(std::size_t step) {
    return "run/checkpoint-" + std::to_string(step) + "/model.safetensors";
}

} // namespace

TEST(ChainKey, DigitRunsNormalised) {
    EXPECT_EQ(store::chain_key_for("checkpoint-1500/optimizer.pt"), "checkpoint-#/optimizer.pt");
    EXPECT_EQ(store::chain_key_for("checkpoint-2000/optimizer.pt"), "checkpoint-#/optimizer.pt");
    EXPECT_EQ(store::chain_key_for("epoch=3-step=1000.ckpt"),
              store::chain_key_for("epoch=4-step=1250.ckpt"));
    EXPECT_EQ(store::chain_key_for("last.ckpt"), "last.ckpt");
}

TEST(Store, RoundTripWholeTrajectory) {
    temp_dir d;
    auto s = store::store::open(d.path() / "store", small_blocks());
    auto traj = trajectory(6);
    s->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        s->mkdir("run/checkpoint-" + std::to_string(i), 0755);
        write_file(*s, ckpt(i), traj[i], 100000 + 3 * i); // odd write sizes
    }
    s->wait_idle();
    for (std::size_t i = 0; i < traj.size(); ++i) {
        EXPECT_EQ(read_file(*s, ckpt(i)), traj[i]) << ckpt(i);
        auto st = s->stat(ckpt(i));
        EXPECT_EQ(st.size, traj[i].size());
        EXPECT_EQ(st.type, store::entry_type::file);
    }
    // Reopened: the same bytes.
    s.reset();
    s = store::store::open(d.path() / "store", small_blocks());
    for (std::size_t i = 0; i < traj.size(); ++i) EXPECT_EQ(read_file(*s, ckpt(i)), traj[i]);
    // Older versions are deltas against newer ones; the newest is standalone.
    auto newest = s->info(ckpt(traj.size() - 1));
    EXPECT_EQ(newest.depth, 0u);
    EXPECT_TRUE(newest.base.empty());
    auto prev = s->info(ckpt(traj.size() - 2));
    EXPECT_EQ(prev.base, newest.version);
    EXPECT_EQ(prev.base_path, ckpt(traj.size() - 1));
    EXPECT_LT(prev.stored_bytes, newest.stored_bytes)
        << "a delta should be smaller than standalone";
    auto f = s->fsck(false);
    EXPECT_TRUE(f.ok()) << (f.problems.empty() ? "" : f.problems.front());
    EXPECT_EQ(f.files, traj.size());
}

TEST(Store, EmptyOddAndSpecialContent) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    std::vector<std::vector<std::byte>> files = {{},
                                                 random_bytes(1, 1),
                                                 random_bytes(3, 2),
                                                 random_bytes(4095, 3),
                                                 random_bytes((1 << 20) + 3, 4)};
    auto w = weights_f32(100003, 9); // NaN payloads, -0.0, denormals, infinities
    files.push_back(to_bytes(w.data(), w.size() * 4));
    for (std::size_t i = 0; i < files.size(); ++i)
        write_file(*s, std::string("f").append(std::to_string(i)), files[i]);
    for (std::size_t i = 0; i < files.size(); ++i)
        EXPECT_EQ(read_file(*s, std::string("f").append(std::to_string(i))), files[i]) << i;
}

TEST(Store, RandomAccessReads) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    auto traj = trajectory(2);
    write_file(*s, "a.safetensors", traj[0]);
    auto r = s->open_reader("a.safetensors");
    std::mt19937 rng(5);
    for (int i = 0; i < 200; ++i) {
        std::uint64_t off = rng() % (traj[0].size() + 10);
        std::size_t len = rng() % 100000;
        std::vector<std::byte> buf(len);
        auto n = r->read(off, buf);
        auto expect = off >= traj[0].size() ? 0 : std::min<std::size_t>(len, traj[0].size() - off);
        ASSERT_EQ(n, expect);
        ASSERT_TRUE(std::equal(buf.begin(), buf.begin() + n, traj[0].begin() + off));
    }
}

TEST(Store, WriterOutOfOrderRewriteTruncateAndReadBack) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    auto data = trajectory(1)[0];
    s->create("x", 0600, true);
    auto w = s->open_writer("x", true);
    // Second half first, then the first half, then rewrite a piece in the middle.
    auto half = data.size() / 2;
    w->write(half, std::span(data).subspan(half));
    w->write(0, std::span(data).subspan(0, half));
    std::vector<std::byte> patch(1000, std::byte{0x5a});
    w->write(12345, patch);
    auto expect = data;
    std::copy(patch.begin(), patch.end(), expect.begin() + 12345);
    std::vector<std::byte> back(expect.size());
    EXPECT_EQ(w->read(0, back), back.size());
    EXPECT_EQ(back, expect);
    ASSERT_TRUE(w->commit());
    EXPECT_EQ(read_file(*s, "x"), expect);
    // Grow past EOF (a hole reads as zeros), then shrink.
    w->write(expect.size() + 100, patch);
    expect.resize(expect.size() + 100, std::byte{0});
    expect.insert(expect.end(), patch.begin(), patch.end());
    ASSERT_TRUE(w->commit());
    EXPECT_EQ(read_file(*s, "x"), expect);
    s->truncate("x", 777);
    expect.resize(777);
    EXPECT_EQ(read_file(*s, "x"), expect);
    s->truncate("x", 5000);
    expect.resize(5000, std::byte{0});
    EXPECT_EQ(read_file(*s, "x"), expect);
    // O_TRUNC of a non-empty file with nothing written leaves it empty.
    auto t = s->open_writer("x", true);
    ASSERT_TRUE(t->commit());
    EXPECT_EQ(s->stat("x").size, 0u);
    // A sequential writer that is read from midway still commits the right bytes.
    auto w2 = s->open_writer("x", true);
    w2->write(0, std::span(data).subspan(0, 200000));
    std::vector<std::byte> mid(50);
    EXPECT_EQ(w2->read(100, mid), 50u);
    EXPECT_TRUE(std::equal(mid.begin(), mid.end(), data.begin() + 100));
    w2->write(200000, std::span(data).subspan(200000));
    ASSERT_TRUE(w2->commit());
    EXPECT_EQ(read_file(*s, "x"), data);
}

// Raw blocks are written from the caller's bytes, several per system call: none may still
// be waiting when write() returns, since the caller then reuses its buffer. Default 128 KiB
// blocks (the smaller ones of other tests are copied instead); chunk sizes that leave
// blocks straddling two writes.
TEST(Store, WriterKeepsNoReferenceToTheCallersBuffer) {
    temp_dir d;
    store::store_options o;
    o.encode_threads = 2;
    auto s = store::store::open(d.path() / "s", o);
    for (std::size_t step = 0; step < 2; ++step) {
        auto data = trajectory(step + 1, 300000, 3)[step];
        auto path = "checkpoint-" + std::to_string(step) + ".safetensors";
        s->create(path, 0644, true);
        auto w = s->open_writer(path, true);
        const std::size_t chunks[] = {1u << 20, 300001, 4097, (1u << 20) + 3, 131072};
        std::vector<std::byte> buf;
        for (std::size_t off = 0, i = 0; off < data.size(); ++i) {
            auto n = std::min(chunks[i % std::size(chunks)], data.size() - off);
            buf.assign(data.begin() + static_cast<std::ptrdiff_t>(off),
                       data.begin() + static_cast<std::ptrdiff_t>(off + n));
            w->write(off, buf);
            std::fill(buf.begin(), buf.end(), std::byte{0xee});
            off += n;
        }
        ASSERT_TRUE(w->commit());
        EXPECT_EQ(read_file(*s, path), data) << path;
    }
    EXPECT_TRUE(s->fsck(false).ok());
}

TEST(Store, CommitAfterUnlinkOrReplaceIsDropped) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    s->create("a", 0644, true);
    auto w = s->open_writer("a", true);
    w->write(0, random_bytes(1000, 1));
    s->unlink("a");
    EXPECT_FALSE(w->commit());
    EXPECT_THROW(s->stat("a"), store::store_error);
    s->create("b", 0644, true);
    auto w2 = s->open_writer("b", true);
    w2->write(0, random_bytes(1000, 2));
    write_file(*s, "c", random_bytes(10, 3));
    s->rename("c", "b");
    EXPECT_FALSE(w2->commit());
    EXPECT_EQ(read_file(*s, "b"), random_bytes(10, 3));
    // A writer told about a rename commits under the new name.
    s->create("d", 0644, true);
    auto w3 = s->open_writer("d", true);
    w3->write(0, random_bytes(500, 4));
    s->rename("d", "e");
    w3->set_path("e");
    EXPECT_TRUE(w3->commit());
    EXPECT_EQ(read_file(*s, "e"), random_bytes(500, 4));
    w.reset(); // open writers own files in tmp/, which fsck would report
    w2.reset();
    w3.reset();
    s->wait_idle();
    auto f = s->fsck(false);
    EXPECT_TRUE(f.ok()) << (f.problems.empty() ? "" : f.problems.front());
}

TEST(Store, NamespaceOps) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    s->mkdir("dir", 0750);
    EXPECT_EQ(s->stat("dir").mode, 0750u);
    EXPECT_EQ(s->stat("dir").type, store::entry_type::directory);
    write_file(*s, "dir/f", random_bytes(100, 1));
    try {
        s->rmdir("dir");
        FAIL() << "rmdir of a non-empty directory";
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), ENOTEMPTY);
    }
    try {
        s->create("dir/f", 0644, true);
        FAIL() << "exclusive create of an existing file";
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), EEXIST);
    }
    s->chmod("dir/f", 0600);
    EXPECT_EQ(s->stat("dir/f").mode, 0600u);
    timespec t{1700000000, 123456789};
    s->utimens("dir/f", std::nullopt, t);
    EXPECT_EQ(s->stat("dir/f").mtime.tv_sec, t.tv_sec);
    EXPECT_EQ(s->stat("dir/f").mtime.tv_nsec, t.tv_nsec);
    std::string v = "hello";
    s->setxattr("dir/f", "user.test", std::as_bytes(std::span(v)), 0);
    auto names = s->listxattr("dir/f");
    EXPECT_NE(std::find(names.begin(), names.end(), "user.test"), names.end());
    // A new version keeps mode and xattrs.
    write_file(*s, "dir/f", random_bytes(200, 2));
    EXPECT_EQ(s->stat("dir/f").mode, 0600u);
    auto got = s->getxattr("dir/f", "user.test");
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), v);
    s->removexattr("dir/f", "user.test");
    EXPECT_THROW(s->getxattr("dir/f", "user.test"), store::store_error);
    s->symlink("dir/f", "link");
    EXPECT_EQ(s->readlink("link"), "dir/f");
    EXPECT_EQ(s->stat("link").type, store::entry_type::symlink);
    s->rename("dir/f", "g");
    EXPECT_EQ(read_file(*s, "g"), random_bytes(200, 2));
    try {
        s->rename("g", "link", RENAME_NOREPLACE);
        FAIL();
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), EEXIST);
    }
    s->rmdir("dir");
    auto entries = s->list("");
    std::vector<std::string> n;
    for (auto& e : entries) n.push_back(e.name);
    std::sort(n.begin(), n.end());
    EXPECT_EQ(n, (std::vector<std::string>{"g", "link"}));
    for (auto bad : {"../x", "a//b", "/abs", "a/./b"})
        EXPECT_THROW(s->stat(bad), store::store_error) << bad;
    try {
        s->open_reader("missing");
        FAIL();
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), ENOENT);
    }
}

// Keep-last-3 as a training run does it, and deletion of 9 of 12 versions in several orders:
// every remaining file bit-exact, and the store no bigger than those files need.
class Rotation : public ::testing::TestWithParam<int> {};

TEST_P(Rotation, DeletingFreesSpaceAndKeepsTheRest) {
    temp_dir d;
    auto o = small_blocks();
    auto s = store::store::open(d.path() / "s", o);
    auto traj = trajectory(12);
    s->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        s->mkdir("run/checkpoint-" + std::to_string(i), 0755);
        write_file(*s, ckpt(i), traj[i]);
    }
    auto full = s->stored_bytes();
    std::vector<std::size_t> order(9);
    for (std::size_t i = 0; i < 9; ++i) order[i] = i;
    std::vector<std::size_t> keep = {9, 10, 11};
    switch (GetParam()) {
    case 0:
        break; // oldest first
    case 1:
        std::reverse(order.begin(), order.end());
        break;
    case 2:
        order = {4, 0, 8, 2, 6, 1, 7, 3, 5};
        break;
    case 3: // keep an older trio: the newest versions are deleted
        order = {11, 10, 9, 0, 1, 2, 3, 4, 5};
        keep = {6, 7, 8};
        break;
    default: {
        std::mt19937 rng(static_cast<unsigned>(GetParam()));
        std::vector<std::size_t> all(12);
        for (std::size_t i = 0; i < 12; ++i) all[i] = i;
        std::shuffle(all.begin(), all.end(), rng);
        order.assign(all.begin(), all.begin() + 9);
        keep.assign(all.begin() + 9, all.end());
        std::sort(keep.begin(), keep.end());
    }
    }
    std::uint64_t last = full;
    for (auto i : order) {
        s->unlink(ckpt(i));
        s->rmdir("run/checkpoint-" + std::to_string(i));
        s->wait_idle();
        auto now = s->stored_bytes();
        EXPECT_LT(now, last) << "deleting " << ckpt(i) << " freed nothing";
        last = now;
        for (auto k : keep) ASSERT_EQ(read_file(*s, ckpt(k)), traj[k]) << ckpt(k);
    }
    // What the three kept files take as a fresh chain, written in the same order.
    temp_dir d2;
    auto fresh = store::store::open(d2.path() / "s", o);
    fresh->mkdir("run", 0755);
    for (auto k : keep) {
        fresh->mkdir("run/checkpoint-" + std::to_string(k), 0755);
        write_file(*fresh, ckpt(k), traj[k]);
    }
    EXPECT_LE(static_cast<double>(s->stored_bytes()),
              1.05 * static_cast<double>(fresh->stored_bytes()));
    auto f = s->fsck(false);
    EXPECT_TRUE(f.ok()) << (f.problems.empty() ? "" : f.problems.front());
    EXPECT_EQ(f.versions, 3u);
}
INSTANTIATE_TEST_SUITE_P(Orders, Rotation, ::testing::Values(0, 1, 2, 3, 17, 23));

TEST(Store, KeepLastThreeAsTrainingDoes) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    auto traj = trajectory(12);
    s->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        s->mkdir("run/checkpoint-" + std::to_string(i), 0755);
        write_file(*s, ckpt(i), traj[i]);
        if (i >= 3) {
            s->unlink(ckpt(i - 3));
            s->rmdir("run/checkpoint-" + std::to_string(i - 3));
        }
    }
    s->wait_idle();
    for (std::size_t i = 9; i < 12; ++i) EXPECT_EQ(read_file(*s, ckpt(i)), traj[i]);
    EXPECT_EQ(s->fsck(false).versions, 3u);
    EXPECT_EQ(s->info(ckpt(11)).depth, 0u);
    EXPECT_EQ(s->info(ckpt(9)).depth, 2u);
}

TEST(Store, ReadDepthIsBounded) {
    temp_dir d;
    auto o = small_blocks();
    o.max_read_depth = 4;
    auto s = store::store::open(d.path() / "s", o);
    auto traj = trajectory(14, 20000, 2);
    s->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        s->mkdir("run/checkpoint-" + std::to_string(i), 0755);
        write_file(*s, ckpt(i), traj[i]);
    }
    for (std::size_t i = 0; i < traj.size(); ++i) {
        auto info = s->info(ckpt(i));
        EXPECT_LE(info.depth + 1, o.max_read_depth) << ckpt(i);
        EXPECT_EQ(read_file(*s, ckpt(i)), traj[i]);
    }
    EXPECT_EQ(s->info(ckpt(13)).depth, 0u);
    // Reading the newest decodes one frame per block.
    s.reset();
    s = store::store::open(d.path() / "s", o);
    auto before = s->counters().frames_decoded;
    read_file(*s, ckpt(13));
    auto blocks = (traj[13].size() + o.block_size - 1) / o.block_size;
    EXPECT_LE(s->counters().frames_decoded - before, blocks + 8); // + small header blocks
}

TEST(Store, CorruptObjectIsReportedWithThePath) {
    temp_dir d;
    auto root = d.path() / "s";
    auto s = store::store::open(root, small_blocks());
    auto traj = trajectory(3);
    s->mkdir("run", 0755);
    for (std::size_t i = 0; i < traj.size(); ++i) {
        s->mkdir("run/checkpoint-" + std::to_string(i), 0755);
        write_file(*s, ckpt(i), traj[i]);
    }
    auto info = s->info(ckpt(2)); // the newest: every other version depends on it
    s.reset();
    auto obj = root / "chains" / info.chain_id / "objects" / info.version;
    {
        int f = ::open(obj.c_str(), O_RDWR);
        ASSERT_GE(f, 0);
        std::byte b;
        ASSERT_EQ(::pread(f, &b, 1, 5000), 1);
        b ^= std::byte{0x10};
        ASSERT_EQ(::pwrite(f, &b, 1, 5000), 1);
        ::close(f);
    }
    s = store::store::open(root, small_blocks());
    try {
        read_file(*s, ckpt(2));
        FAIL() << "corrupt object read without error";
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), EIO);
        EXPECT_NE(std::string(e.what()).find(ckpt(2)), std::string::npos) << e.what();
    }
    auto f = s->fsck(false);
    ASSERT_FALSE(f.ok());
    std::string all;
    for (auto& p : f.problems) all += p + "\n";
    for (std::size_t i = 0; i < 3; ++i) EXPECT_NE(all.find(ckpt(i)), std::string::npos) << all;
    // Repair drops nothing committed: the damage stays reported.
    auto r = s->fsck(true);
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(std::filesystem::exists(obj));
}

TEST(Store, ManyWritersAndReadersAtOnce) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    auto traj = trajectory(2, 30000, 2);
    write_file(*s, "shared", traj[0]);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            try {
                for (int round = 0; round < 3; ++round) {
                    auto data = random_bytes(200000 + static_cast<std::size_t>(t) * 1000,
                                             static_cast<std::uint32_t>(t * 10 + round));
                    auto path = "rank" + std::to_string(t) + "_step" + std::to_string(round);
                    write_file(*s, path, data, 65536);
                    if (read_file(*s, path) != data) failures++;
                    if (read_file(*s, "shared") != traj[0]) failures++;
                }
            } catch (const std::exception& e) {
                ADD_FAILURE() << e.what();
                failures++;
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    s->wait_idle();
    EXPECT_TRUE(s->fsck(false).ok());
}

TEST(Store, SecondOpenIsRefused) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s");
    try {
        auto t = store::store::open(d.path() / "s");
        FAIL() << "a store opened twice";
    } catch (const store::store_error& e) {
        EXPECT_EQ(e.error_number(), EBUSY);
        EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos);
    }
}

TEST(Store, NotAStore) {
    temp_dir d;
    std::filesystem::create_directories(d.path() / "x");
    { std::ofstream(d.path() / "x" / "file") << "data"; }
    EXPECT_THROW(store::store::open(d.path() / "x"), store::store_error);
    EXPECT_THROW(store::store::init(d.path() / "x"), store::store_error);
}

// Files of several ranks per step share a chain key; each must be a delta against its own
// rank's next step, not against another rank of the same step. DeepSpeed names the rank in
// the file (global_step10/mp_rank_01_model_states.pt), Megatron in a directory
// (iter_0000010/mp_rank_01/model_optim_rng.pt).
void expect_ranks_chain_against_their_own_rank(
    const std::function<std::string(int step, int rank)>& rank_file) {
    temp_dir d;
    auto s = store::store::open(d.path() / "s", small_blocks());
    std::vector<std::vector<float>> w;
    for (int r = 0; r < 3; ++r) w.push_back(weights_f32(30000, 50 + static_cast<std::uint32_t>(r)));
    std::set<std::string> made;
    for (int step : {10, 20, 30}) {
        for (int r = 0; r < 3; ++r) {
            auto path = rank_file(step, r);
            for (auto slash = path.find('/'); slash != std::string::npos;
                 slash = path.find('/', slash + 1))
                if (made.insert(path.substr(0, slash)).second)
                    s->mkdir(path.substr(0, slash), 0755);
            w[static_cast<std::size_t>(r)] = step_f32(w[static_cast<std::size_t>(r)], 1.0,
                                                      static_cast<std::uint32_t>(step * 10 + r));
            write_file(*s, path, make_safetensors({w[static_cast<std::size_t>(r)]}));
        }
    }
    for (int step : {10, 20})
        for (int r = 0; r < 3; ++r)
            EXPECT_EQ(s->info(rank_file(step, r)).base_path, rank_file(step + 10, r))
                << rank_file(step, r);
    for (int r = 0; r < 3; ++r) EXPECT_TRUE(s->info(rank_file(30, r)).base.empty());
}

TEST(Store, RanksChainAgainstTheirOwnRank) {
    expect_ranks_chain_against_their_own_rank([](int step, int r) {
        return "global_step" + std::to_string(step) + "/mp_rank_0" + std::to_string(r) +
               "_model_states.pt";
    });
}

TEST(Store, RanksInDirectoriesChainAgainstTheirOwnRank) {
    expect_ranks_chain_against_their_own_rank([](int step, int r) {
        return fmt::format("iter_{:07}/mp_rank_{:02}/model_optim_rng.pt", step, r);
    });
}

// Footers keep each segment's checkpoint name and row size (flag bit 1, after the flags);
// footers written before them, without that bit, decode as they always did.
TEST(ObjectFooter, CheckpointNamesRoundTripAndOlderFootersStillDecode) {
    store::object_footer f;
    f.uid = 7;
    f.logical_size = 100;
    f.base_version = "v";
    f.blocks.push_back({0, 100, 16, 140, 0, 100});
    f.layout.kind = format::layout_kind::torch_zip;
    f.layout.segments = {{"data/0", 0, 60, codec::element_type::f32, "model.tok.weight", 12},
                         {"data/0#after", 60, 24, {}, "model.tok.weight#after"},
                         {"version", 84, 16, {}}};
    f.uncompressed = true;
    auto bytes = store::encode_footer(f);
    auto g = store::decode_footer(bytes, "test");
    ASSERT_EQ(g.layout.segments.size(), 3u);
    EXPECT_EQ(g.layout.segments[0].tensor, "model.tok.weight");
    EXPECT_EQ(g.layout.segments[0].row_bytes, 12u);
    EXPECT_EQ(g.layout.segments[1].tensor, "model.tok.weight#after");
    EXPECT_EQ(g.layout.segments[2].tensor, "");
    EXPECT_EQ(g.layout.segments[2].name, "version");
    EXPECT_TRUE(g.uncompressed);
    // Any truncation of the names is refused.
    for (std::size_t cut = 1; cut < 40; ++cut)
        EXPECT_THROW(store::decode_footer(std::span(bytes).first(bytes.size() - cut), "test"),
                     store::corrupt_store);

    // The footer of the format before names, written field by field as docs/store-format.md
    // gives it.
    std::vector<std::byte> old;
    auto put = [&](auto v) {
        for (std::size_t i = 0; i < sizeof v; ++i)
            old.push_back(static_cast<std::byte>((std::uint64_t(v) >> (8 * i)) & 0xff));
    };
    auto put_text = [&](std::string_view s) {
        put(static_cast<std::uint16_t>(s.size()));
        for (char c : s) old.push_back(static_cast<std::byte>(c));
    };
    put(std::uint64_t{7});
    put(std::uint64_t{100});
    put_text("v");
    put(std::uint32_t{1});
    put(std::uint64_t{0}), put(std::uint32_t{100}), put(std::uint64_t{16}), put(std::uint32_t{140});
    put(std::uint64_t{0}), put(std::uint32_t{100});
    put(std::uint8_t{1});
    put(std::uint32_t{2});
    put_text("data/0"), put(std::uint64_t{0}), put(std::uint64_t{60}), put(std::uint8_t{3}); // f32
    put_text("rest"), put(std::uint64_t{60}), put(std::uint64_t{40}), put(std::uint8_t{0xff});
    put(std::uint64_t{25}), put(std::uint64_t{5});
    put(std::uint8_t{0});
    auto o = store::decode_footer(old, "old");
    ASSERT_EQ(o.layout.segments.size(), 2u);
    EXPECT_EQ(o.layout.segments[0].name, "data/0");
    EXPECT_EQ(o.layout.segments[0].type, codec::element_type::f32);
    EXPECT_EQ(o.layout.segments[0].tensor, "");
    EXPECT_EQ(o.layout.segments[1].row_bytes, 0u);
    EXPECT_EQ(o.changed, 5u);
    // Without checkpoint names the footer is written exactly as before.
    EXPECT_EQ(store::encode_footer(o), old);
    // Unknown flag bits are still refused.
    old.back() = std::byte{4};
    EXPECT_THROW(store::decode_footer(old, "old"), store::corrupt_store);
}

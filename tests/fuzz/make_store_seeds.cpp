// Writes real store files as fuzz seeds: builds a small store in a temporary directory
// (safetensors checkpoints of one chain, so the older one becomes a delta against the newer;
// two versions of a text file; an empty and a tiny file), then copies every object as
// DIR/object.<n> and every version record as DIR/record.<n>, plus damaged ones that once got
// through (object.forged-tail, record.big-seq).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tpde/store/store.hpp"

using namespace tpde;
namespace fs = std::filesystem;

namespace {

void append(std::vector<std::byte>& out, const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
}

// A safetensors file: an fp32 and a bf16 tensor, weights moved a little each step.
std::vector<std::byte> checkpoint(int step) {
    std::mt19937 rng(7);
    std::normal_distribution<float> w(0.0f, 0.05f);
    std::vector<float> f32(2000);
    std::vector<std::uint16_t> bf16(1500);
    for (std::size_t i = 0; i < f32.size(); ++i)
        f32[i] = w(rng) + (i % 3 == 0 ? 1e-4f * static_cast<float>(step) : 0.0f);
    for (std::size_t i = 0; i < bf16.size(); ++i) {
        float v = w(rng) + (i % 5 == 0 ? 1e-2f * static_cast<float>(step) : 0.0f);
        std::uint32_t bits;
        std::memcpy(&bits, &v, 4);
        bf16[i] = static_cast<std::uint16_t>(bits >> 16);
    }
    nlohmann::json h{
        {"w", {{"dtype", "F32"}, {"shape", {f32.size()}}, {"data_offsets", {0, 8000}}}},
        {"b", {{"dtype", "BF16"}, {"shape", {bf16.size()}}, {"data_offsets", {8000, 11000}}}}};
    auto text = h.dump();
    while (text.size() % 8) text += ' ';
    std::vector<std::byte> out;
    std::uint64_t len = text.size();
    append(out, &len, 8);
    append(out, text.data(), text.size());
    append(out, f32.data(), f32.size() * 4);
    append(out, bf16.data(), bf16.size() * 2);
    return out;
}

std::vector<std::byte> text_file(int version) {
    std::string s;
    for (int i = 0; i < 300; ++i)
        s += "step " + std::to_string(i) + " loss " + std::to_string(1.0 / (i + version)) + "\n";
    return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                  reinterpret_cast<const std::byte*>(s.data() + s.size()));
}

std::vector<char> read_all(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& p, const std::vector<char>& bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + p.string());
}

void write_file(store::store& s, const std::string& path, std::span<const std::byte> data) {
    s.create(path, 0644, false);
    auto w = s.open_writer(path, true);
    if (!data.empty()) w->write(0, data);
    if (!w->commit()) throw std::runtime_error("commit failed: " + path);
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_store_seeds DIR\n");
        return 2;
    }
    std::string tmpl = (fs::temp_directory_path() / "tpde-seeds-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
        std::perror("mkdtemp");
        return 1;
    }
    const fs::path tmp = tmpl;
    int rc = 0;
    try {
        {
            store::store_options o;
            o.block_size = 4096;
            o.encode_threads = 1;
            o.cache.max_bytes = 1u << 20;
            auto s = store::store::open(tmp / "store", o);
            s->mkdir("run", 0755);
            for (int step : {1, 2, 3}) {
                auto dir = "run/checkpoint-" + std::to_string(step);
                s->mkdir(dir, 0755);
                write_file(*s, dir + "/model.safetensors", checkpoint(step));
            }
            // Torch archives (make_format_seeds.py writes one when python3-torch is there):
            // objects whose footers carry checkpoint names.
            if (auto pt = read_all(fs::path(argv[1]) / "a.pt"); !pt.empty()) {
                s->mkdir("torch", 0755);
                for (int step : {1, 2}) {
                    if (step == 2) pt[pt.size() / 2] ^= 1;
                    write_file(*s, "torch/step-" + std::to_string(step) + ".pt",
                               std::as_bytes(std::span(pt)));
                }
            }
            write_file(*s, "log-1.txt", text_file(1));
            write_file(*s, "log-2.txt", text_file(2));
            write_file(*s, "empty", {});
            const std::byte tiny[] = {std::byte{'h'}, std::byte{'i'}, std::byte{'\n'}};
            write_file(*s, "tiny", tiny);
            s->wait_idle();
        }
        int objects = 0, records = 0;
        for (const auto& e : fs::recursive_directory_iterator(tmp / "store" / "chains")) {
            if (!e.is_regular_file() || e.file_size() > 60000) continue;
            auto kind = e.path().parent_path().filename();
            if (kind == "objects")
                fs::copy_file(e.path(),
                              fs::path(argv[1]) / ("object." + std::to_string(objects++)));
            else if (kind == "versions")
                fs::copy_file(e.path(),
                              fs::path(argv[1]) / ("record." + std::to_string(records++)));
        }
        if (objects == 0 || records == 0) throw std::runtime_error("the store wrote no objects");
        // Regression seeds. An object whose tail puts the footer past the end, with the length
        // that wraps the sum back to the tail (it once passed the bounds check and sized a
        // 1 TiB allocation); a record whose seq is too large for 64 bits (parsed as a float,
        // its conversion was undefined behaviour).
        auto forged = read_all(fs::path(argv[1]) / "object.0");
        const std::uint64_t end = forged.size() - 32, pos = ~std::uint64_t{0} - (1ull << 40) + 1,
                            len = end - pos;
        std::memcpy(forged.data() + end, &pos, 8);
        std::memcpy(forged.data() + end + 8, &len, 8);
        write_all(fs::path(argv[1]) / "object.forged-tail", forged);
        const std::string big_seq = R"({"chain":"0","path":"a","seq":179580791412992314145,)"
                                    R"("size":1,"tpdefs_record":1,"version":"v"})";
        write_all(fs::path(argv[1]) / "record.big-seq", {big_seq.begin(), big_seq.end()});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_store_seeds: %s\n", e.what());
        rc = 1;
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
    return rc;
}

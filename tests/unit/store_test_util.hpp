#pragma once
// Helpers for store tests: a temporary store directory, synthetic safetensors checkpoints
// forming a training-like trajectory, and whole-file write/read through the store.
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_data.hpp"
#include "tpde/store/store.hpp"

namespace tpde::test {

class temp_dir {
public:
    temp_dir() {
        auto base = std::filesystem::temp_directory_path();
        std::string tmpl = (base / "tpde-test-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// A safetensors file of `tensors` fp32 tensors.
inline std::vector<std::byte> make_safetensors(const std::vector<std::vector<float>>& tensors) {
    nlohmann::json h = nlohmann::json::object();
    std::size_t off = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        auto n = tensors[i].size() * 4;
        h["layer" + std::to_string(i) + ".weight"] = {
            {"dtype", "F32"}, {"shape", {tensors[i].size()}}, {"data_offsets", {off, off + n}}};
        off += n;
    }
    auto text = h.dump();
    while ((8 + text.size()) % 8) text += ' ';
    std::vector<std::byte> out(8);
    std::uint64_t len = text.size();
    std::memcpy(out.data(), &len, 8);
    for (char c : text) out.push_back(static_cast<std::byte>(c));
    for (const auto& t : tensors) {
        auto b = to_bytes(t.data(), t.size() * 4);
        out.insert(out.end(), b.begin(), b.end());
    }
    return out;
}

// `count` checkpoints of a training-like run: every weight moves a little each time.
inline std::vector<std::vector<std::byte>>
trajectory(std::size_t count, std::size_t per_tensor = 60000, std::size_t tensors = 3) {
    std::vector<std::vector<float>> w;
    for (std::size_t i = 0; i < tensors; ++i) w.push_back(weights_f32(per_tensor + 7 * i, 100 + i));
    std::vector<std::vector<std::byte>> out;
    for (std::size_t s = 0; s < count; ++s) {
        for (std::size_t i = 0; i < tensors; ++i)
            w[i] = step_f32(w[i], 1.0, static_cast<std::uint32_t>(1000 * s + i));
        out.push_back(make_safetensors(w));
    }
    return out;
}

inline void write_file(store::store& s, const std::string& path, std::span<const std::byte> data,
                       std::size_t chunk = 1 << 20) {
    s.create(path, 0644, false);
    auto w = s.open_writer(path, true);
    for (std::size_t off = 0; off < data.size(); off += chunk)
        w->write(off, data.subspan(off, std::min(chunk, data.size() - off)));
    ASSERT_TRUE(w->commit());
}

inline std::vector<std::byte> read_file(store::store& s, const std::string& path) {
    auto r = s.open_reader(path);
    std::vector<std::byte> out(r->size());
    EXPECT_EQ(r->read(0, out), out.size());
    return out;
}

} // namespace tpde::test

#include <gtest/gtest.h>
#include <random>
#include <string>

#include "tpde/format/stream_segmenter.hpp"

using namespace tpde::format;

namespace {

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> b(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) b[i] = static_cast<std::byte>(s[i]);
    return b;
}

std::vector<std::byte> safetensors_with_gap() {
    std::string h = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 15]},)"
                    R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]}})";
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    file += h + std::string(20, 'x');
    return bytes_of(file);
}

// Feeds `file` in chunks of `chunk` bytes; checks what was handed out is a prefix of the
// final layout and that the final layout covers the file exactly.
file_layout stream(const std::vector<std::byte>& file, std::size_t chunk) {
    stream_segmenter seg;
    std::vector<segment> handed;
    for (std::size_t off = 0; off < file.size(); off += chunk)
        for (auto& s : seg.feed(std::span(file).subspan(off, std::min(chunk, file.size() - off))))
            handed.push_back(s);
    auto l = seg.finish();
    // Segments handed out may start at the end of the file (an open-ended tail that got no
    // bytes); the final layout drops those.
    std::size_t real = 0;
    for (const auto& s : handed) real += s.offset < file.size();
    EXPECT_LE(real, l.segments.size());
    for (std::size_t i = 0; i < handed.size() && i < l.segments.size(); ++i) {
        EXPECT_EQ(handed[i].name, l.segments[i].name);
        EXPECT_EQ(handed[i].offset, l.segments[i].offset);
    }
    std::uint64_t at = 0;
    for (const auto& s : l.segments) {
        EXPECT_EQ(s.offset, at) << s.name;
        at += s.length;
    }
    EXPECT_EQ(at, file.size());
    return l;
}

} // namespace

TEST(StreamSegmenter, GapsBetweenTensorsAreHandedOutInOrder) {
    auto file = safetensors_with_gap();
    for (std::size_t chunk : {1u, 3u, 64u, 4096u}) {
        auto l = stream(file, chunk);
        ASSERT_EQ(l.kind, layout_kind::safetensors);
        ASSERT_EQ(l.segments.size(), 4u);
        EXPECT_EQ(l.segments[2].name, "w#after");
        EXPECT_EQ(l.segments[3].name, "b");
        EXPECT_EQ(l.segments[3].type, tpde::codec::element_type::bf16);
    }
    EXPECT_EQ(segment_file(file).segments.size(), 4u); // the whole-file parser agrees
}

TEST(StreamSegmenter, TruncatedAndGarbageInputStillCovered) {
    auto file = safetensors_with_gap();
    for (std::size_t cut : {0u, 5u, 9u, 40u, 100u})
        stream(std::vector<std::byte>(file.begin(), file.begin() + std::min(cut, file.size())), 7);
    std::mt19937 rng(5);
    for (int round = 0; round < 50; ++round) {
        std::vector<std::byte> junk(1 + rng() % 3000);
        for (auto& b : junk) b = static_cast<std::byte>(rng());
        if (round % 3 == 0)
            junk[0] = std::byte{'P'}, junk[1] = std::byte{'K'}, junk[2] = std::byte{3},
            junk[3] = std::byte{4};
        stream(junk, 1 + rng() % 100);
    }
}

TEST(StreamSegmenter, GenericFileIsOneSegmentMatchedByOffset) {
    std::vector<std::byte> file(10000, std::byte{0x42});
    auto l = stream(file, 333);
    ASSERT_EQ(l.segments.size(), 1u);
    EXPECT_EQ(l.kind, layout_kind::generic);
    EXPECT_EQ(l.segments[0].name, "");
}

// `tpde`: the offline codec tool. encode/decode a file against its predecessor in a
// training run, and report per-block statistics.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fmt/core.h>
#include <malloc.h>
#include <memory>
#include <optional>
#include <thread>

#include "container.hpp"
#include "file_io.hpp"
#include "tpde/codec/codec.hpp"
#include "tpde/util/ordered_pipeline.hpp"

namespace fs = std::filesystem;
using namespace tpde;

namespace {

struct common_options {
    unsigned threads{std::max(1u, std::thread::hardware_concurrency())};
};

struct encode_args {
    fs::path input, output, ref;
    std::uint32_t block_size{128u << 10};
    std::string type{"auto"};
};
struct decode_args {
    fs::path input, output, ref;
};
struct stats_args {
    fs::path prev, next;
    std::uint32_t block_size{128u << 10};
    std::string type{"auto"};
    bool quiet{false};
};

std::optional<codec::element_type> parse_type(const std::string& s) {
    if (s == "auto") return std::nullopt;
    auto t = codec::element_type_from_name(s);
    if (!t) throw CLI::ValidationError("--type", "unknown element type '" + s + "'");
    return t;
}

std::unique_ptr<util::thread_pool> make_pool(unsigned threads) {
    // One thread means: code on the calling thread, as single-threaded tools do.
    return threads > 1 ? std::make_unique<util::thread_pool>(threads) : nullptr;
}

struct encoded_block {
    std::vector<std::byte> frame;
    codec::encode_info info;
    std::size_t raw_size;
    std::uint64_t offset;
};

// Encodes NEW block by block against PREV at the same offsets, handing frames to `sink`
// in order.
template <typename Sink>
void encode_blocks(const tools::input_file& next, const tools::input_file* prev,
                   std::uint32_t block_size, std::optional<codec::element_type> type,
                   unsigned threads, Sink&& sink) {
    auto pool = make_pool(threads);
    util::ordered_pipeline<encoded_block> pipe(pool.get(), 2 * std::max(1u, threads));
    codec::encode_options opts;
    opts.type = type;
    auto consume = [&](encoded_block&& e) {
        next.release(e.offset, e.raw_size);
        if (prev) prev->release(e.offset, e.raw_size);
        sink(std::move(e));
    };
    for (std::uint64_t off = 0; off < next.size(); off += block_size) {
        auto block = next.view(off, block_size);
        auto ref = prev ? prev->view(off, block_size) : std::span<const std::byte>{};
        pipe.push(
            [block, ref, off, opts] {
                encoded_block e;
                e.frame = codec::encode(block, ref, opts, &e.info);
                e.raw_size = block.size();
                e.offset = off;
                return e;
            },
            consume);
    }
    pipe.drain(consume);
}

int run_encode(const encode_args& a, const common_options& c) {
    tools::input_file next(a.input);
    std::optional<tools::input_file> prev;
    if (!a.ref.empty()) prev.emplace(a.ref);
    tools::output_file out(a.output);
    out.write(tools::write_container_header({a.block_size, next.size(), prev.has_value()}));
    std::uint64_t stored = tools::container_header_size;
    encode_blocks(next, prev ? &*prev : nullptr, a.block_size, parse_type(a.type), c.threads,
                  [&](encoded_block&& e) {
                      std::uint32_t len = static_cast<std::uint32_t>(e.frame.size());
                      out.write(std::as_bytes(std::span(&len, 1)));
                      out.write(e.frame);
                      stored += 4 + e.frame.size();
                  });
    out.commit();
    return 0;
}

int run_decode(const decode_args& a, const common_options& c) {
    tools::input_file in(a.input);
    auto h = tools::read_container_header(in);
    if (h.has_reference && a.ref.empty())
        throw std::runtime_error(a.input.string() +
                                 " was encoded against a reference: pass --ref PREV");
    std::optional<tools::input_file> prev;
    if (!a.ref.empty()) prev.emplace(a.ref);
    tools::output_file out(a.output);
    auto pool = make_pool(c.threads);
    struct decoded_block {
        std::vector<std::byte> bytes;
        std::uint64_t frame_end; // offset in IN just past this block's frame
    };
    util::ordered_pipeline<decoded_block> pipe(pool.get(), 2 * std::max(1u, c.threads));
    std::uint64_t in_off = tools::container_header_size, written = 0;
    auto sink = [&](decoded_block&& d) {
        out.write(d.bytes);
        in.release(0, d.frame_end);
        if (prev) prev->release(written, d.bytes.size());
        written += d.bytes.size();
    };
    codec::decode_options dopts;
    dopts.max_raw_size = h.block_size;
    for (std::uint64_t off = 0; off < h.total_size; off += h.block_size) {
        auto frame = tools::read_frame(in, in_off, h.block_size);
        auto ref = prev ? prev->view(off, h.block_size) : std::span<const std::byte>{};
        std::uint64_t expect = std::min<std::uint64_t>(h.block_size, h.total_size - off);
        std::uint64_t index = off / h.block_size;
        pipe.push(
            [frame, ref, expect, index, dopts, frame_end = in_off, &a] {
                try {
                    auto block = codec::decode(frame, ref, dopts);
                    if (block.size() != expect)
                        throw codec::decode_error("block has the wrong size");
                    return decoded_block{std::move(block), frame_end};
                } catch (const codec::reference_mismatch& e) {
                    throw std::runtime_error(
                        fmt::format("{}: block {}: {} (is --ref the file it was encoded against?)",
                                    a.input.string(), index, e.what()));
                } catch (const codec::decode_error& e) {
                    throw std::runtime_error(
                        fmt::format("{}: block {}: {}", a.input.string(), index, e.what()));
                }
            },
            sink);
    }
    pipe.drain(sink);
    if (in_off != in.size())
        throw std::runtime_error(a.input.string() + ": trailing bytes after the last frame");
    out.commit();
    return 0;
}

int run_stats(const stats_args& a, const common_options& c) {
    tools::input_file prev(a.prev);
    tools::input_file next(a.next);
    if (!a.quiet)
        fmt::print("{:>6} {:>12} {:>5} {:>10} {:>8} {:>12} {:>12} {:>7}\n", "block", "offset",
                   "type", "method", "changed", "bytes_in", "bytes_out", "ratio");
    std::uint64_t index = 0, in_total = 0, out_total = tools::container_header_size, elements = 0,
                  changed = 0;
    encode_blocks(next, &prev, a.block_size, parse_type(a.type), c.threads, [&](encoded_block&& e) {
        std::uint64_t out = 4 + e.frame.size();
        if (!a.quiet)
            fmt::print("{:>6} {:>12} {:>5} {:>10} {:>7.2f}% {:>12} {:>12} {:>7.3f}\n", index,
                       index * a.block_size, codec::name_of(e.info.type),
                       codec::name_of(e.info.chosen),
                       e.info.elements ? 100.0 * e.info.changed / e.info.elements : 0.0, e.raw_size,
                       out, double(e.raw_size) / double(out));
        ++index;
        in_total += e.raw_size;
        out_total += out;
        elements += e.info.elements;
        changed += e.info.changed;
    });
    fmt::print("{:>6} {:>12} {:>5} {:>10} {:>7.2f}% {:>12} {:>12} {:>7.3f}\n", "total", "", "", "",
               elements ? 100.0 * changed / elements : 0.0, in_total, out_total,
               double(in_total) / double(out_total));
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    // Blocks are a few MiB each: keep freed ones in the heap for the next block instead of
    // returning them to the kernel and faulting fresh zeroed pages in every time (measured:
    // that cost more than the coding itself).
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    CLI::App app{"tpde: lossless delta codec for training checkpoints (TPDE)"};
    app.require_subcommand(1);
    // One line per error, like every other failure of this tool.
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("tpde: ") + e.what() + "\n";
    });
    common_options common;
    auto add_threads = [&](CLI::App* sub) {
        sub->add_option("-j,--threads", common.threads,
                        "worker threads (1 = code on the calling thread)")
            ->check(CLI::Range(1u, 256u))
            ->capture_default_str();
    };

    encode_args ea;
    auto* enc =
        app.add_subcommand("encode", "encode NEW, optionally as a delta against PREV, into OUT");
    enc->add_option("NEW", ea.input, "file to encode")->required()->check(CLI::ExistingFile);
    enc->add_option("-o,--output", ea.output, "output .tpde file (- for standard output)")
        ->required();
    enc->add_option("--ref", ea.ref, "PREV: the previous checkpoint of the same run")
        ->check(CLI::ExistingFile);
    enc->add_option("--block-size", ea.block_size, "block size in bytes")
        ->check(CLI::Range(4096u, tools::max_block_size))
        ->capture_default_str();
    enc->add_option("--type", ea.type, "element type: auto, bytes, f16, bf16, f32, f64")
        ->capture_default_str();
    add_threads(enc);

    decode_args da;
    auto* dec = app.add_subcommand("decode", "decode IN (a .tpde file) into OUT, bit-exact");
    dec->add_option("IN", da.input, ".tpde file")->required()->check(CLI::ExistingFile);
    dec->add_option("-o,--output", da.output, "output file (- for standard output)")->required();
    dec->add_option("--ref", da.ref, "PREV: the file IN was encoded against")
        ->check(CLI::ExistingFile);
    add_threads(dec);

    stats_args sa;
    auto* st = app.add_subcommand("stats", "per-block delta statistics of NEW against PREV");
    st->add_option("PREV", sa.prev, "previous checkpoint")->required()->check(CLI::ExistingFile);
    st->add_option("NEW", sa.next, "new checkpoint")->required()->check(CLI::ExistingFile);
    st->add_option("--block-size", sa.block_size, "block size in bytes")
        ->check(CLI::Range(4096u, tools::max_block_size))
        ->capture_default_str();
    st->add_option("--type", sa.type, "element type: auto, bytes, f16, bf16, f32, f64")
        ->capture_default_str();
    st->add_flag("-q,--quiet", sa.quiet, "print only the total line");
    add_threads(st);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (*enc) return run_encode(ea, common);
        if (*dec) return run_decode(da, common);
        if (*st) return run_stats(sa, common);
    } catch (const CLI::Error& e) {
        return app.exit(e);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tpde: %s\n", e.what());
        return 1;
    }
    return 0;
}

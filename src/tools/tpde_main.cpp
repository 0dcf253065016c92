// `tpde`: the offline codec tool (one concept, its command line: over 500 lines on purpose).
// Encodes a checkpoint against its predecessor in a training run (segment by segment, each against
// the parent's segment of the same name), decodes it back bit-exact, and reports what the codec
// did.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fmt/core.h>
#include <malloc.h>
#include <map>
#include <memory>
#include <optional>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "container.hpp"
#include "exit_status.hpp"
#include "file_io.hpp"
#include "mount_stats.hpp"
#include "store_commands.hpp"
#include "tpde/codec/codec.hpp"
#include "tpde/format/block_plan.hpp"
#include "tpde/format/dcp.hpp"
#include "tpde/format/stream_segmenter.hpp"
#include "tpde/util/ordered_pipeline.hpp"

namespace fs = std::filesystem;
using namespace tpde;

namespace {

// One coding thread per core, less one for the calling thread's reading and writing (which
// keeps most of a core busy): on 2 cores, 2 coding threads took longer than 1.
unsigned default_coding_threads() {
    return std::max(2u, std::thread::hardware_concurrency()) - 1;
}

struct coding_options {
    unsigned threads{default_coding_threads()};
    std::uint32_t block_size{128u << 10};
    std::string type{"auto"};
    bool segments{true}; // false: fixed blocks at the same offsets, no format parsing
};

std::optional<codec::element_type> parse_type(const std::string& s) {
    if (s == "auto") return std::nullopt;
    auto t = codec::element_type_from_name(s);
    if (!t) throw CLI::ValidationError("--type", "unknown element type '" + s + "'");
    return t;
}

// `threads` coding threads. The calling thread reads the inputs and writes the output beside
// them, as zstd's asynchronous I/O does: for one thread, that hides the copies in and out,
// a quarter of a 100 MB encode or decode done in line. The coding threads run at nice 5, so
// that this thread, which they wait on, is not queued behind them where they fill every core:
// with 2 coding threads on 2 cores, the full pair encoded in 0.145 s instead of 0.177 s.
std::unique_ptr<util::thread_pool> coding_pool(unsigned threads) {
    return std::make_unique<util::thread_pool>(std::max(1u, threads), 5);
}

// A .distcp file's items named by the .metadata beside it (torch.distributed.checkpoint
// writes it into the same directory, after the .distcp files), when it is there and readable.
void name_dcp_items(const tools::input_file& f, format::file_layout& l) {
    const auto& p = f.path();
    if (p.extension() != ".distcp") return;
    const auto meta = p.parent_path() / ".metadata";
    std::error_code ec;
    if (!fs::is_regular_file(meta, ec)) {
        spdlog::debug("{}: no {} beside it: items named by their order", p.string(), meta.string());
        return;
    }
    std::string why;
    std::optional<format::dcp_metadata> md;
    try {
        tools::input_file m(meta);
        md = format::read_dcp_metadata(m.view(0, m.size()), &why);
    } catch (const std::exception& e) {
        why = e.what();
    }
    if (!md) {
        spdlog::warn("{}: {} not understood ({}): items named by their order", p.string(),
                     meta.string(), why);
        return;
    }
    format::name_dcp_items(l, *md, p.filename().string());
}

format::file_layout layout_of(const tools::input_file& f, bool segments) {
    if (!segments) return format::generic_layout(f.size());
    auto start = std::chrono::steady_clock::now();
    auto l = format::segment_file(f.view(0, f.size()));
    name_dcp_items(f, l);
    spdlog::debug(
        "{}: {} layout, {} segments, parsed in {:.3f} ms", f.path().string(),
        format::name_of(l.kind), l.segments.size(),
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    if (!l.fallback_reason.empty())
        spdlog::debug("{}: not parsed as a checkpoint ({}), using fixed blocks", f.path().string(),
                      l.fallback_reason);
    return l;
}

// Buffers of consumed blocks, kept for later ones.
class buffer_pool {
public:
    std::vector<std::byte> take() {
        if (spare_.empty()) return {};
        auto b = std::move(spare_.back());
        spare_.pop_back();
        return b;
    }
    void give(std::vector<std::byte>&& b) { spare_.push_back(std::move(b)); }

private:
    std::vector<std::vector<std::byte>> spare_;
};

struct encoded_block {
    format::planned_block plan;
    std::vector<std::byte> frame;
    codec::encode_info info;
    // The block's bytes and its reference's, read from the files; recycled for later blocks.
    std::vector<std::byte> input, reference;
};

// Encodes NEW by the block plan (each block against its matched range of PREV), handing
// results to `sink` in file order.
template <typename Sink>
format::file_layout encode_file(const tools::input_file& next, const tools::input_file* prev,
                                const coding_options& o, Sink&& sink) {
    auto next_layout = layout_of(next, o.segments);
    std::optional<format::file_layout> prev_layout;
    if (prev) prev_layout = layout_of(*prev, o.segments);
    auto plan = format::plan_blocks(next_layout, prev_layout ? &*prev_layout : nullptr,
                                    prev ? prev->size() : 0, {.block_size = o.block_size});
    const auto forced_type = parse_type(o.type);

    auto pool = coding_pool(o.threads);
    util::ordered_pipeline<encoded_block> pipe(pool.get(), 2 * std::max(1u, o.threads));
    // At most two buffers per block in flight, whatever the file size.
    buffer_pool buffers;
    auto consume = [&](encoded_block&& e) {
        buffers.give(std::move(e.input));
        buffers.give(std::move(e.reference));
        sink(std::move(e));
    };
    for (const auto& b : plan) {
        encoded_block e{b, {}, {}, buffers.take(), buffers.take()};
        auto block = next.read(b.offset, b.size, e.input);
        auto ref = prev && b.ref_size ? prev->read(b.ref_offset, b.ref_size, e.reference)
                                      : std::span<const std::byte>{};
        codec::encode_options opts;
        opts.type = forced_type ? forced_type : b.type;
        pipe.push(
            [e = std::move(e), block, ref, opts]() mutable {
                e.frame = codec::encode(block, ref, opts, &e.info);
                return std::move(e);
            },
            consume);
    }
    pipe.drain(consume);
    return next_layout;
}

struct encode_args {
    fs::path input, output, ref;
};

int run_encode(const encode_args& a, const coding_options& o) {
    tools::input_file next(a.input);
    std::optional<tools::input_file> prev;
    if (!a.ref.empty()) prev.emplace(a.ref);
    tools::output_file out(a.output);
    out.write(tools::write_container_header({o.block_size, next.size(), prev.has_value()}));
    encode_file(next, prev ? &*prev : nullptr, o, [&](encoded_block&& e) {
        tools::write_block_record(out, {e.plan.ref_offset, e.plan.ref_size, e.frame});
    });
    out.commit();
    return 0;
}

struct decode_args {
    fs::path input, output, ref;
    unsigned threads{default_coding_threads()};
};

int run_decode(const decode_args& a) {
    tools::input_file in(a.input);
    auto h = tools::read_container_header(in);
    if (h.has_reference && a.ref.empty())
        throw std::runtime_error(a.input.string() +
                                 " was encoded against a reference: pass --ref PREV");
    std::optional<tools::input_file> prev;
    if (!a.ref.empty()) prev.emplace(a.ref);
    tools::output_file out(a.output);
    auto pool = coding_pool(a.threads);
    struct decoded_block {
        std::vector<std::byte> bytes;
        std::span<const std::byte> decoded; // the start of `bytes`
        // The record's frame and its reference, read from the files; recycled.
        std::vector<std::byte> frame, reference;
    };
    util::ordered_pipeline<decoded_block> pipe(pool.get(), 2 * std::max(1u, a.threads));
    // At most three buffers per block in flight, whatever the file size.
    buffer_pool buffers;
    std::uint64_t in_off = tools::container_header_size, written = 0;
    auto sink = [&](decoded_block&& d) {
        if (written + d.decoded.size() > h.total_size)
            throw std::runtime_error(a.input.string() +
                                     ": blocks add up to more than the file size");
        out.write(d.decoded);
        written += d.decoded.size();
        for (auto* b : {&d.bytes, &d.frame, &d.reference}) buffers.give(std::move(*b));
    };
    codec::decode_options dopts;
    dopts.max_raw_size = h.block_size;
    for (std::size_t index = 0; in_off < in.size(); ++index) {
        decoded_block d{buffers.take(), {}, buffers.take(), buffers.take()};
        auto r = tools::read_block_record(in, in_off, h.block_size, d.frame);
        std::span<const std::byte> ref;
        if (r.ref_size) {
            if (!prev || r.ref_offset > prev->size() || prev->size() - r.ref_offset < r.ref_size)
                throw std::runtime_error(fmt::format("{}: block {} refers past the end of {}: is "
                                                     "--ref the file it was encoded against?",
                                                     a.input.string(), index,
                                                     prev ? a.ref.string() : "the reference"));
            ref = prev->read(r.ref_offset, r.ref_size, d.reference);
        }
        pipe.push(
            [d = std::move(d), frame = r.frame, ref, index, dopts, &a]() mutable {
                try {
                    d.decoded = codec::decode(frame, ref, d.bytes, dopts);
                    return std::move(d);
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
    if (written != h.total_size)
        throw std::runtime_error(fmt::format("{}: truncated: blocks give {} of {} bytes",
                                             a.input.string(), written, h.total_size));
    out.commit();
    return 0;
}

struct stats_args {
    std::vector<std::string> paths; // PREV NEW, or MOUNTPOINT
    fs::path prev, next;
    bool quiet{false};
    bool blocks{false};
    bool json{false}, prometheus{false}; // MOUNTPOINT only
    double timeout{0};
    tools::mount_stats_args mount;
};

// Per segment (tensor) of NEW: how it matched, what the codec chose, what it saved.
int run_stats(const stats_args& a, const coding_options& o) {
    tools::input_file prev(a.prev);
    tools::input_file next(a.next);
    struct row {
        std::size_t segment{0};
        std::uint64_t offset{0};
        std::string type, methods, match;
        std::uint64_t elements{0}, changed{0}, in{0}, out{0};

        void add(const encoded_block& e, std::uint64_t stored) {
            type = codec::name_of(e.info.type);
            // Several where blocks differ: a resized tensor's new rows (name+none).
            auto add_to = [](std::string& list, const std::string& m) {
                if (("+" + list + "+").find("+" + m + "+") == std::string::npos)
                    list += list.empty() ? m : "+" + m;
            };
            add_to(match, format::name_of(e.plan.match));
            add_to(methods, codec::name_of(e.info.chosen));
            elements += e.info.elements;
            changed += e.info.changed;
            in += e.plan.size;
            out += stored;
        }
    };
    std::vector<row> rows;
    row total;
    total.out = tools::container_header_size;
    auto layout = encode_file(next, &prev, o, [&](encoded_block&& e) {
        if (a.blocks || rows.empty() || rows.back().segment != e.plan.segment) {
            rows.emplace_back();
            rows.back().segment = e.plan.segment;
            rows.back().offset = e.plan.offset;
        }
        std::uint64_t stored = tools::block_record_header_size + e.frame.size();
        rows.back().add(e, stored);
        total.add(e, stored);
    });
    auto print = [](const std::string& label, const row& r) {
        std::string name = label.size() > 40 ? "..." + label.substr(label.size() - 37) : label;
        fmt::print("{:<40} {:>5} {:>10} {:>17} {:>7.2f}% {:>12} {:>12} {:>7.3f}\n", name, r.type,
                   r.match, r.methods,
                   r.elements ? 100.0 * double(r.changed) / double(r.elements) : 0.0, r.in, r.out,
                   double(r.in) / double(r.out));
    };
    if (!a.quiet) {
        fmt::print("layout: {}{}\n", format::name_of(layout.kind),
                   layout.fallback_reason.empty() ? ""
                                                  : " (fallback: " + layout.fallback_reason + ")");
        fmt::print("{:<40} {:>5} {:>10} {:>17} {:>8} {:>12} {:>12} {:>7}\n", "segment", "type",
                   "match", "method", "changed", "bytes_in", "bytes_out", "ratio");
        for (const auto& r : rows) {
            const auto& seg = layout.segments[r.segment];
            std::string name = a.blocks             ? fmt::format("@{}", r.offset)
                               : seg.tensor.empty() ? seg.name
                                                    : seg.tensor;
            print(name.empty() ? "(whole file)" : name, r);
        }
    }
    total.type = total.match = total.methods = "";
    print("total", total);
    return 0;
}

// `tpde stats MOUNTPOINT` (a tpdefs mount's counters) or `tpde stats PREV NEW` (how NEW codes
// against PREV): told apart by the number of paths and whether the one is a tpdefs mount.
int run_stats_command(stats_args& a, const coding_options& o) {
    bool mount_only = a.json || a.prometheus || a.mount.wait_idle;
    if (a.paths.size() == 1) {
        tools::exit_after(
            a.timeout,
            a.paths[0] + (a.mount.wait_idle ? ": background work still pending" : ": no answer"));
        if (!tools::is_tpdefs_mount(a.paths[0]))
            throw std::runtime_error(
                a.paths[0] + " is not the root of a tpdefs mount (no user.tpde.stats attribute); "
                             "to compare two checkpoints, give both: tpde stats PREV NEW");
        if (a.json && a.prometheus)
            throw CLI::ValidationError("--json, --prometheus", "give one of them");
        a.mount.mountpoint = a.paths[0];
        a.mount.output = a.json         ? tools::mount_stats_args::format::json
                         : a.prometheus ? tools::mount_stats_args::format::prometheus
                                        : tools::mount_stats_args::format::text;
        return tools::run_mount_stats(a.mount);
    }
    if (mount_only || a.timeout > 0)
        throw CLI::ValidationError("--json, --prometheus, --wait-idle, --timeout",
                                   "only for a MOUNTPOINT, not for PREV NEW");
    for (const auto& p : a.paths)
        if (!fs::is_regular_file(p))
            throw CLI::ValidationError("PREV NEW", "file does not exist: " + p);
    a.prev = a.paths[0];
    a.next = a.paths[1];
    return run_stats(a, o);
}

struct segments_args {
    fs::path path;
    std::size_t stream_chunk{0}; // 0: parse the whole file; else feed it in chunks this size
    fs::path ref;                // with PREV: how each segment finds its reference in it
};

// The layout as the stream segmenter builds it, fed `chunk` bytes at a time; checks that
// what it handed out on the way is what it ends with.
format::file_layout streamed_layout(const tools::input_file& f, std::size_t chunk) {
    format::stream_segmenter seg;
    std::vector<format::segment> handed;
    for (std::uint64_t off = 0; off < f.size(); off += chunk)
        for (auto& s : seg.feed(f.view(off, chunk))) handed.push_back(std::move(s));
    auto l = seg.finish();
    for (std::size_t i = 0; i < handed.size() && i < l.segments.size(); ++i) {
        const auto& a = handed[i];
        const auto& b = l.segments[i];
        bool clipped = a.length == format::open_ended || a.offset + a.length > f.size();
        if (a.name != b.name || a.tensor != b.tensor || a.offset != b.offset ||
            (!clipped && a.length != b.length))
            throw std::runtime_error(
                fmt::format("stream segmenter changed segment {} ('{}') at the end", i, a.name));
    }
    return l;
}

int run_segments(const segments_args& a) {
    tools::input_file f(a.path);
    format::file_layout l;
    if (a.stream_chunk) {
        l = streamed_layout(f, a.stream_chunk);
        name_dcp_items(f, l);
    } else {
        l = layout_of(f, true);
    }
    // Against PREV: the match of the blocks each segment lies in (name, key, offset, none;
    // joined by + where they differ).
    std::vector<std::string> matches;
    if (!a.ref.empty()) {
        tools::input_file prev(a.ref);
        auto prev_layout = layout_of(prev, true);
        matches.resize(l.segments.size());
        std::size_t i = 0;
        for (const auto& b : format::plan_blocks(l, &prev_layout, prev.size())) {
            while (i < l.segments.size() && l.segments[i].offset + l.segments[i].length <= b.offset)
                ++i;
            for (auto k = i; k < l.segments.size() && l.segments[k].offset < b.offset + b.size;
                 ++k) {
                std::string m = format::name_of(b.match);
                if (("+" + matches[k] + "+").find("+" + m + "+") == std::string::npos)
                    matches[k] += matches[k].empty() ? m : "+" + m;
            }
        }
    }
    fmt::print("layout: {}{}\n", format::name_of(l.kind),
               l.fallback_reason.empty() ? "" : " (fallback: " + l.fallback_reason + ")");
    // offset, length, element type, bytes per row of the leading dimension (- unknown), with
    // --ref the match, the format's name, and " = " the checkpoint's name for the tensor
    // where it gives one.
    for (std::size_t i = 0; i < l.segments.size(); ++i) {
        const auto& s = l.segments[i];
        fmt::print(
            "{:>12} {:>12} {:>6} {:>8} {}{}{}\n", s.offset, s.length,
            s.type ? codec::name_of(*s.type) : "-", s.row_bytes ? std::to_string(s.row_bytes) : "-",
            matches.empty() ? "" : fmt::format("{:>11} ", matches[i]),
            s.name.empty() ? "(whole file)" : s.name, s.tensor.empty() ? "" : " = " + s.tensor);
    }
    return 0;
}

void add_coding_options(CLI::App* sub, coding_options& o) {
    sub->add_option("-j,--threads", o.threads,
                    "coding threads (reading and writing run beside them on the calling thread)")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    sub->add_option("--block-size", o.block_size, "largest block, in bytes")
        ->check(CLI::Range(4096u, tools::max_block_size))
        ->capture_default_str();
    sub->add_option("--type", o.type,
                    "element type for every block: auto (from the file format, else probed), "
                    "bytes, f16, bf16, "
                    "f32, f64")
        ->capture_default_str();
    sub->add_flag("!--no-segments", o.segments,
                  "cut fixed blocks at equal offsets instead of reading the checkpoint format");
}

} // namespace

int main(int argc, char** argv) {
    // Blocks are a few hundred KiB: keep freed ones in the heap for the next block instead of
    // returning them to the kernel and faulting fresh zeroed pages in every time (measured:
    // that cost more than the coding itself).
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    // Logs go to stderr: stdout may be the decoded file (-o -).
    spdlog::set_default_logger(spdlog::stderr_color_mt("tpde"));
    if (const char* level = std::getenv("TPDE_LOG"))
        spdlog::set_level(spdlog::level::from_str(level));

    CLI::App app{"tpde: lossless delta codec and chain store for training checkpoints (TPDE)\n"
                 "Exit status: 0 done, 1 failed (fsck: problems found), 2 usage error."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "tpde " TPDE_VERSION, "print the version and exit");
    // One line per error, like every other failure of this tool.
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("tpde: ") + e.what() + "\n";
    });

    coding_options co;
    encode_args ea;
    auto* enc =
        app.add_subcommand("encode", "encode NEW, optionally as a delta against PREV, into OUT");
    enc->add_option("NEW", ea.input, "file to encode")->required()->check(CLI::ExistingFile);
    enc->add_option("-o,--output", ea.output, "output .tpde file (- for standard output)")
        ->required();
    enc->add_option("--ref", ea.ref, "PREV: the previous checkpoint of the same run")
        ->check(CLI::ExistingFile);
    add_coding_options(enc, co);

    decode_args da;
    auto* dec = app.add_subcommand("decode", "decode IN (a .tpde file) into OUT, bit-exact");
    dec->add_option("IN", da.input, ".tpde file")->required()->check(CLI::ExistingFile);
    dec->add_option("-o,--output", da.output, "output file (- for standard output)")->required();
    dec->add_option("--ref", da.ref, "PREV: the file IN was encoded against")
        ->check(CLI::ExistingFile);
    dec->add_option("-j,--threads", da.threads,
                    "decode threads (reading and writing run beside them on the calling thread)")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();

    stats_args sa;
    auto* st = app.add_subcommand(
        "stats", "per-segment delta statistics of NEW against PREV, or a tpdefs mount's counters");
    st->add_option("PATHS", sa.paths,
                   "PREV NEW (two checkpoints: how NEW codes against PREV), or MOUNTPOINT (the "
                   "root of a tpdefs mount)")
        ->required()
        ->expected(1, 2);
    st->add_flag("-q,--quiet", sa.quiet, "PREV NEW: print only the total line");
    st->add_flag("--blocks", sa.blocks, "PREV NEW: one line per block instead of per segment");
    st->add_flag("--json", sa.json, "MOUNTPOINT: the counters as JSON");
    st->add_flag("--prometheus", sa.prometheus,
                 "MOUNTPOINT: the counters in the Prometheus text format (node_exporter's "
                 "textfile collector)");
    st->add_flag("--wait-idle", sa.mount.wait_idle,
                 "MOUNTPOINT: first wait until background re-encoding and compression have "
                 "finished (not the compressions that wait for writes to stop)");
    st->add_option("--timeout", sa.timeout,
                   "MOUNTPOINT: give up after SECONDS (with --wait-idle: if work is still "
                   "pending), exit status 1, even if the daemon does not answer (0: no limit)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    add_coding_options(st, co);

    segments_args ga;
    auto* sg = app.add_subcommand("segments", "show how FILE is cut into named segments");
    sg->add_option("FILE", ga.path, "checkpoint file")->required()->check(CLI::ExistingFile);
    sg->add_option("--stream", ga.stream_chunk,
                   "segment as a writer would see it: fed in chunks of this many bytes")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
    sg->add_option("--ref", ga.ref,
                   "PREV: also show how each segment finds its reference in PREV (match: "
                   "name, key, offset, none)")
        ->check(CLI::ExistingFile);

    auto run_store_command = tools::add_store_commands(app);

    // The first word that is not an option must name a subcommand (CLI11 alone would say
    // "A subcommand is required").
    if (argc > 1 && argv[1][0] != '-') {
        std::string names;
        bool known = false;
        for (const auto* sub : app.get_subcommands({})) {
            known = known || sub->get_name() == argv[1];
            names += (names.empty() ? "" : ", ") + sub->get_name();
        }
        if (!known) {
            std::fprintf(stderr, "tpde: unknown subcommand %s (one of: %s; see tpde --help)\n",
                         argv[1], names.c_str());
            return tools::exit_usage;
        }
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return tools::usage_exit(app, e);
    }
    try {
        if (*enc) return run_encode(ea, co);
        if (*dec) return run_decode(da);
        if (*st) return run_stats_command(sa, co);
        if (*sg) return run_segments(ga);
        return run_store_command();
    } catch (const CLI::Error& e) {
        return tools::usage_exit(app, e);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tpde: %s\n", e.what());
        return tools::exit_failure;
    }
    return 0;
}

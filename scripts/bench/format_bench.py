#!/usr/bin/python3
"""Format-awareness benchmark: does matching segments by name keep the delta when tensor
data shifts or the state dict changes, and what does parsing cost?

For the last pair (PREV, NEW) of each variant directory given:
  - NEW re-saved with a grown pickle (every tensor shifted by a multiple of 64 bytes) and
    with one tensor added, each encoded against PREV, next to the unshifted NEW: ratios with
    segment matching and with fixed blocks (--no-segments);
  - the state-dict changes of tests/format/naming_cases.py (entries inserted, removed,
    renamed, reordered; optimizer state rebuilt or nested; tied weights; a resized
    embedding), which renumber torch.save's storages, and the same state as a DCP checkpoint
    (.distcp + .metadata) with an entry inserted: ratio of each modified pair next to the
    ratio of its unchanged pair (tests/format/naming_cases.py says which pair that is), for
    this build and, with --before TPDE, another one;
  - segmentation overhead: time of `tpde segments` on PREV and NEW (the parse the encoder
    does) as a share of the single-threaded encode time (medians of --runs runs).
Every encoding is decoded and compared with its input.
Usage: format_bench.py [--runs N] [--before TPDE] [--no-shift] DIR [DIR...]
       (DIR holds step_*.pt, e.g. traj/full)
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "tests", "format"))
import dcp_writer  # noqa: E402
import naming_cases  # noqa: E402

TPDE = os.environ.get("TPDE", os.path.join(here, "..", "..", "build", "tpde"))


def run(tpde, *args):
    subprocess.run([tpde, *args], check=True, stdout=subprocess.DEVNULL)


def timed(*args):
    t = time.perf_counter()
    run(TPDE, *args)
    return time.perf_counter() - t


def parse_seconds(prev, new, work):
    """What the encoder itself reports spending in the segmenter, PREV and NEW together."""
    r = subprocess.run([TPDE, "encode", "-j", "1", "--ref", prev, new, "-o", os.path.join(work, "x.tpde")],
                       check=True, capture_output=True, text=True, env={**os.environ, "TPDE_LOG": "debug"})
    return sum(float(m) for m in re.findall(r"parsed in ([0-9.]+) ms", r.stderr)) / 1000


def ratio(new, prev, work, *flags, tpde=TPDE):
    out = os.path.join(work, "x.tpde")
    run(tpde, "encode", *flags, "--ref", prev, new, "-o", out)
    dec = os.path.join(work, "x.out")
    run(tpde, "decode", "--ref", prev, out, "-o", dec)
    if open(dec, "rb").read() != open(new, "rb").read():
        raise SystemExit(f"format_bench: {new} did not decode bit-exact ({tpde})")
    return os.path.getsize(new) / os.path.getsize(out)


ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--before", help="another tpde binary (e.g. the main branch's) for the 'before' columns")
ap.add_argument("--no-shift", action="store_true", help="skip the shifted-data and timing tables")
ap.add_argument("dirs", nargs="+")
args = ap.parse_args()
binaries = [("after", TPDE)] + ([("before", args.before)] if args.before else [])

shift_rows, naming_rows, overhead_rows = [], [], []
for d in args.dirs:
    files = sorted(glob.glob(os.path.join(d, "step_*.pt")))
    prev, new = files[-2], files[-1]
    label = os.path.relpath(d, os.path.dirname(os.path.dirname(os.path.abspath(d))))
    with tempfile.TemporaryDirectory() as work:
        def path(tag):
            os.makedirs(os.path.join(work, tag), exist_ok=True)
            return os.path.join(work, tag, os.path.basename(new))  # same root name, same headers

        prev_state = torch.load(prev, map_location="cpu")
        state = torch.load(new, map_location="cpu")
        if not args.no_shift:
            shifted = dict(state) if isinstance(state, dict) else {"state": state}
            shifted["__note__"] = "x" * 100  # pickle grows: data moves by 64 or 128 bytes
            grown = path("g")
            torch.save(shifted, grown)
            added = dict(state) if isinstance(state, dict) else {"state": state}
            added["__extra__"] = torch.randn(1000)
            plus = path("a")
            torch.save(added, plus)
            base = ratio(new, prev, work)
            for name, f in (("unshifted", new), ("pickle grew", grown), ("tensor added", plus)):
                seg = ratio(f, prev, work)
                fixed = ratio(f, prev, work, "--no-segments")
                shift_rows.append(f"| {label} | {name} | {seg:.3f} | {fixed:.3f} | {100 * (seg / base - 1):+.2f}% |")
            enc = [timed("encode", "-j", "1", "--ref", prev, new, "-o", os.path.join(work, "x.tpde"))
                   for _ in range(args.runs)]
            seg = [parse_seconds(prev, new, work) for _ in range(args.runs)]
            overhead_rows.append((label, statistics.median(enc), statistics.median(seg)))

        refs = {}
        for case, prep, modify, reference in naming_cases.CASES:
            # The reference pair: PREV, NEW themselves where nothing is prepared.
            default_ref = prep is naming_cases.identity and reference is None
            paths = {"prev": prev if prep is naming_cases.identity else path("prep-prev"),
                     "new": path("m"), "ref_prev": path("ref-prev"), "ref_new": path("ref-new")}
            if prep is naming_cases.identity:
                mod = modify(state)
                if mod is None:
                    continue
                torch.save(mod, paths["new"])
                if default_ref:
                    paths["ref_prev"], paths["ref_new"] = prev, new
                else:
                    torch.save(reference(prev_state), paths["ref_prev"])
                    torch.save(reference(state), paths["ref_new"])
            elif not naming_cases.write_case(prev_state, state, prep, modify, reference, paths):
                continue
            cells = []
            for tag, tpde in binaries:
                key = (tpde, prep, reference)
                if key not in refs or not default_ref:
                    refs[key] = ratio(paths["ref_new"], paths["ref_prev"], work, tpde=tpde)
                cells.append((refs[key], ratio(paths["new"], paths["prev"], work, tpde=tpde)))
            naming_rows.append((label, case, cells))
            print(f"format_bench: {label}: {case} done", file=sys.stderr)
        # The same state saved as torch.distributed.checkpoint saves it (tests/format/
        # dcp_writer.py: items in a .distcp file, a .metadata beside it), an entry inserted at
        # the front: every later item moves.
        dp = dcp_writer.save(prev_state, os.path.join(work, "dcp-prev"))
        db = dcp_writer.save(state, os.path.join(work, "dcp-new"))
        dm = dcp_writer.save(naming_cases.insert_at(0.0)(state), os.path.join(work, "dcp-mod"))
        cells = [(ratio(db, dp, work, tpde=t), ratio(dm, dp, work, tpde=t)) for _, t in binaries]
        naming_rows.append((label, "DCP .distcp + .metadata, inserted at the front", cells))

if shift_rows:
    print("| variant | NEW | ratio, segments | ratio, fixed blocks | vs unshifted (segments) |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(shift_rows))
    print()
# The unchanged pair's ratio of each build (the same where frames are byte-identical), the
# modified pair's, and how far the second falls below the first.
head = "| variant | case | " + " | ".join(
    f"unchanged {t} | modified {t} | vs unchanged {t}" for t, _ in binaries) + " |"
print(head)
print("|---|---|" + "---:|---:|---:|" * len(binaries))
for label, case, cells in naming_rows:
    cols = " | ".join(f"{b:.3f} | {r:.3f} | {100 * (r / b - 1):+.2f}%" for b, r in cells)
    print(f"| {label} | {case} | {cols} |")
if overhead_rows:
    print()
    print("| variant | encode -j1 s | segmenter PREV+NEW s | share |")
    print("|---|---:|---:|---:|")
    for label, e, s in overhead_rows:
        print(f"| {label} | {e:.3f} | {s:.4f} | {100 * s / e:.2f}% |")

#!/usr/bin/python3
"""Format-awareness benchmark: does matching segments by name keep the delta when tensor
data shifts, and what does parsing cost?

For the last pair (PREV, NEW) of each variant directory given:
  - NEW re-saved with a grown pickle (every tensor shifted by a multiple of 64 bytes) and
    with one tensor added, each encoded against PREV, next to the unshifted NEW: ratios with
    segment matching and with fixed blocks (--no-segments);
  - segmentation overhead: time of `tpde segments` on PREV and NEW (the parse the encoder
    does) as a share of the single-threaded encode time (medians of --runs runs).
Usage: format_bench.py [--runs N] DIR [DIR...]   (DIR holds step_*.pt, e.g. traj/model)
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import tempfile
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
TPDE = os.environ.get("TPDE", os.path.join(here, "..", "..", "build", "tpde"))


def run(*args):
    subprocess.run([TPDE, *args], check=True, stdout=subprocess.DEVNULL)


def timed(*args):
    t = time.perf_counter()
    run(*args)
    return time.perf_counter() - t


def parse_seconds(prev, new, work):
    """What the encoder itself reports spending in the segmenter, PREV and NEW together."""
    r = subprocess.run([TPDE, "encode", "-j", "1", "--ref", prev, new, "-o", os.path.join(work, "x.tpde")],
                       check=True, capture_output=True, text=True, env={**os.environ, "TPDE_LOG": "debug"})
    return sum(float(m) for m in re.findall(r"parsed in ([0-9.]+) ms", r.stderr)) / 1000


def ratio(new, prev, work, *flags):
    out = os.path.join(work, "x.tpde")
    run("encode", *flags, "--ref", prev, new, "-o", out)
    dec = os.path.join(work, "x.out")
    run("decode", "--ref", prev, out, "-o", dec)
    if open(dec, "rb").read() != open(new, "rb").read():
        raise SystemExit(f"format_bench: {new} did not decode bit-exact")
    return os.path.getsize(new) / os.path.getsize(out)


ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("dirs", nargs="+")
args = ap.parse_args()
print("| variant | NEW | ratio, segments | ratio, fixed blocks | vs unshifted (segments) |")
print("|---|---|---:|---:|---:|")
overhead_rows = []
for d in args.dirs:
    files = sorted(glob.glob(os.path.join(d, "step_*.pt")))
    prev, new = files[-2], files[-1]
    label = os.path.relpath(d, os.path.dirname(os.path.dirname(os.path.abspath(d))))
    with tempfile.TemporaryDirectory() as work:
        state = torch.load(new, map_location="cpu")
        shifted = dict(state) if isinstance(state, dict) else {"state": state}
        shifted["__note__"] = "x" * 100  # pickle grows: data moves by 64 or 128 bytes
        os.makedirs(os.path.join(work, "g"), exist_ok=True)
        grown = os.path.join(work, "g", os.path.basename(new))
        torch.save(shifted, grown)
        added = dict(state) if isinstance(state, dict) else {"state": state}
        added["__extra__"] = torch.randn(1000)
        os.makedirs(os.path.join(work, "a"), exist_ok=True)
        plus = os.path.join(work, "a", os.path.basename(new))
        torch.save(added, plus)
        base = ratio(new, prev, work)
        for name, f in (("unshifted", new), ("pickle grew", grown), ("tensor added", plus)):
            seg = ratio(f, prev, work)
            fixed = ratio(f, prev, work, "--no-segments")
            print(f"| {label} | {name} | {seg:.3f} | {fixed:.3f} | {100 * (seg / base - 1):+.2f}% |")
        enc = [timed("encode", "-j", "1", "--ref", prev, new, "-o", os.path.join(work, "x.tpde"))
               for _ in range(args.runs)]
        seg = [parse_seconds(prev, new, work) for _ in range(args.runs)]
        overhead_rows.append((label, statistics.median(enc), statistics.median(seg)))
print()
print("| variant | encode -j1 s | segmenter PREV+NEW s | share |")
print("|---|---:|---:|---:|")
for label, e, s in overhead_rows:
    print(f"| {label} | {e:.3f} | {s:.4f} | {100 * s / e:.2f}% |")

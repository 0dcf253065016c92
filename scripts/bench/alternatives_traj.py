#!/usr/bin/python3
"""alternatives_traj.py -- alternatives.py over the last K pairs of trajectory directories.

Usage: alternatives_traj.py [--pairs K] [--reps N] [--slow-reps N] [--skip-slow]
                            [--methods a,b] [--standalone-first] [--json OUT] DIR [DIR...]

DIR holds one run's checkpoints (step_*.pt; name order in the C locale = chronological, as
codec_bench.sh assumes). Each of the last K consecutive pairs (default 2) is measured by
alternatives.py (every output decoded and compared with NEW); --standalone-first also
measures DIR's first checkpoint with no reference (the file a store starts with).
Per variant (DIR as parent/name, e.g. traj/full) and method the table shows the median over
pairs of the ratio (min-max) and of the per-pair median MB/s (encode, decode); each pair's
own table (alternatives.py's) goes to stderr.
Exit status 1 if any method failed or was not lossless on any pair.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ALT = os.path.join(HERE, "alternatives.py")


def run_one(argv, work, label):
    out = os.path.join(work, f"r{len(os.listdir(work))}.json")
    print(f"== {label}", file=sys.stderr, flush=True)
    # its per-pair table goes to stderr with the progress; stdout carries the summaries
    r = subprocess.run(["/usr/bin/python3", ALT, *argv, "--json", out], stdout=sys.stderr)
    if not os.path.exists(out):
        sys.exit(f"alternatives_traj.py: alternatives.py {' '.join(argv)} failed (exit {r.returncode})")
    with open(out) as f:
        return json.load(f), r.returncode


def summarise(title, reports):
    """One markdown table: per method, medians over the reports (pairs)."""
    per = {}
    for rep in reports:
        raw = rep["raw_bytes"]
        for r in rep["results"]:
            d = per.setdefault(r["method"], {"settings": r["settings"], "ratio": [], "enc": [],
                                             "dec": [], "bad": 0})
            if r["error"] or not r["lossless"]:
                d["bad"] += 1
                continue
            d["ratio"].append(raw / r["stored"])
            d["enc"].append(statistics.median(raw / 1e6 / s for s in r["enc_s"]))
            d["dec"].append(statistics.median(raw / 1e6 / s for s in r["dec_s"]))
    print(f"\n### {title}\n")
    print("| method | settings | ratio, median (min–max) | enc MB/s, median | dec MB/s, median |")
    print("|---|---|---:|---:|---:|")
    for m, d in per.items():
        if d["bad"]:
            print(f"| {m} | {d['settings']} | **failed or NOT LOSSLESS on {d['bad']} of "
                  f"{d['bad'] + len(d['ratio'])}** | | |")
            continue
        rs = sorted(d["ratio"])
        spread = f" ({rs[0]:.3f}–{rs[-1]:.3f})" if len(rs) > 1 else ""
        print(f"| {m} | {d['settings']} | {statistics.median(rs):.3f}{spread} | "
              f"{statistics.median(d['enc']):.0f} | {statistics.median(d['dec']):.0f} |")
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--pairs", type=int, default=2, help="the last K pairs of each DIR (0: all)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slow-reps", type=int)
    ap.add_argument("--skip-slow", action="store_true")
    ap.add_argument("--methods")
    ap.add_argument("--standalone-first", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="all per-pair reports, as one JSON list")
    args = ap.parse_args()

    passthrough = ["--reps", str(args.reps)]
    if args.slow_reps:
        passthrough += ["--slow-reps", str(args.slow_reps)]
    if args.skip_slow:
        passthrough.append("--skip-slow")
    if args.methods:
        passthrough += ["--methods", args.methods]

    failed, everything = False, []
    with tempfile.TemporaryDirectory(prefix="alternatives_traj.") as work:
        for d in args.dirs:
            files = sorted(glob.glob(os.path.join(d, "step_*.pt")), key=lambda p: os.path.basename(p).encode())
            if len(files) < 2:
                sys.exit(f"alternatives_traj.py: need >= 2 step_*.pt files in {d}, found {len(files)}")
            absd = os.path.abspath(d)
            variant = f"{os.path.basename(os.path.dirname(absd))}/{os.path.basename(absd)}"
            pairs = list(zip(files[:-1], files[1:]))
            if args.pairs > 0:
                pairs = pairs[-args.pairs:]
            reports = []
            for prev, new in pairs:
                rep, rc = run_one([prev, new, *passthrough], work,
                                  f"{variant}: {os.path.basename(prev)} -> {os.path.basename(new)}")
                reports.append(rep)
                failed |= rc != 0
            everything += [{"variant": variant, **r} for r in reports]
            names = ", ".join(f"{os.path.basename(p)}->{os.path.basename(n)}" for p, n in pairs)
            summarise(f"{variant}: {len(pairs)} pair(s) ({names}), {args.reps} reps each", reports)
            if args.standalone_first:
                rep, rc = run_one(["--standalone", files[0], *passthrough], work,
                                  f"{variant}: {os.path.basename(files[0])} standalone")
                failed |= rc != 0
                everything.append({"variant": variant, "standalone": True, **rep})
                summarise(f"{variant}: {os.path.basename(files[0])} standalone, {args.reps} reps", [rep])
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

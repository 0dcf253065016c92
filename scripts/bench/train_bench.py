#!/usr/bin/python3
"""train_bench.py: training throughput with checkpoints on tpdefs vs on a plain directory.

Usage: scripts/bench/train_bench.py [--runs N] [--steps S] [--every K]

Runs scripts/demo_train.py (a small model, torch.save of model + AdamW + step + RNG every K
steps, keeping the last 3) writing into a plain directory and into a tpdefs mount over a
directory on the same disk, alternating, N runs each. Prints steps/s of the whole loop
(training and saving; demo_train's wait for the ratio of the previous checkpoint is off,
--no-wait, so the background re-encoding overlaps training as in a real run) and the median
save time per checkpoint both ways. Target: steps/s ratio >= 0.95.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "mount"))
import mount_util  # noqa: E402

TPDEFS = os.environ.get("TPDEFS", os.path.join(ROOT, "build", "tpdefs"))


def run(dir_, args, report):
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo_train.py"), dir_,
                    "--report", report, "--no-wait", *args], check=True, stdout=subprocess.DEVNULL)
    return json.load(open(report))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    a = ap.parse_args()
    args = ["--steps", str(a.steps), "--every", str(a.every)]
    base = tempfile.mkdtemp(prefix="train-bench-", dir=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
    res = {"plain": [], "tpdefs": []}
    for r in range(a.runs):
        plain = os.path.join(base, f"plain-{r}")
        os.makedirs(plain)
        res["plain"].append(run(plain, args, os.path.join(base, "plain.json")))
        with mount_util.mounted(TPDEFS, base=base) as m:
            res["tpdefs"].append(run(m.mnt, args, os.path.join(base, "tpdefs.json")))
    sps = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in res.items()}
    save = {k: statistics.median(s for x in v for s in x["save_seconds"]) for k, v in res.items()}
    print(f"\n## training with a checkpoint every {a.every} steps ({a.steps} steps), medians of {a.runs} runs\n")
    print("| | plain directory | tpdefs mount | tpdefs / plain (target >= 0.95) |\n|---|---|---|---|")
    print(f"| steps/s | {sps['plain']:.2f} | {sps['tpdefs']:.2f} | {sps['tpdefs'] / sps['plain']:.3f} |")
    print(f"| save time per checkpoint | {save['plain']:.3f} s | {save['tpdefs']:.3f} s | |")
    subprocess.run(["rm", "-rf", base])


if __name__ == "__main__":
    main()

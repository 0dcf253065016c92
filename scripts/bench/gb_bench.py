#!/usr/bin/python3
"""gb_bench.py: gigabyte checkpoints saved back to back, tpdefs vs a plain directory vs
libfuse's passthrough_ll, side by side in one run (issue 16).

Usage: scripts/bench/gb_bench.py [--runs N] [--saves K] [--levers] [--big-gib G] DIR

DIR holds step_*.pt checkpoints of one run (name order = training order), e.g. the
GPT-2-small shape of ../shared/data/gen_checkpoints.py (`--arch gpt --params-target 1.24e8
--n-layer 12 --n-head 12 --batch-size 2 --seq-len 128 --mode full`: 1.48 GB each). Every run
gives each target (plain directory, passthrough_ll over a directory, tpdefs over a store, all
on the same disk under $BENCH_TMPDIR, default /var/tmp; the order rotates between runs) a
fresh directory and saves into it as a keep-last-3 training run does (checkpoint-<n>/model.pt,
the oldest directory deleted once there are 4):

1. one save into an idle target (dd bs=1M conv=fsync);
2. K saves back to back with dd bs=1M conv=fsync (fsync before close);
3. K saves back to back with shutil.copyfile (sendfile, as cp and frameworks' copies do)
   and an fsync of the file after it;
4. K paced saves: each once the previous save's background work is done (tpdefs:
   maintenance_pending 0). save + background = the shortest interval at which saves can come
   indefinitely without background work piling up.
Then, for tpdefs: the time from the last close until background work is done (compactions)
and until the deferred compressions are done too, the write amplification
(object_bytes_written / bytes_committed, every rewrite counted), the ratio, the daemon's peak
RSS. Inputs are read from the page cache (read once before each target).

--levers: the back-to-back dd saves again with each of the write path's levers turned off in
turn (--background-io normal, --writeback lazy, --write-mode raw, --write-mode compress),
alternating with the defaults in the same run.

--big-gib G (0: skip): one file of G GiB (the checkpoints of DIR concatenated, cut to size)
written into tpdefs and into the plain directory, each fsynced; tpdefs' peak RSS against its
cache + 256 MiB; then both read cold (page cache dropped, tpdefs remounted) and compared
byte for byte.

Medians over runs, with min-max. Needs root (mounts, drop_caches).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mount_bench import EXAMPLE, TPDEFS, drop_caches, sh, wait_mounted  # noqa: E402

CACHE_MIB = 512
KEEP_LAST = 3


class Target:
    """Where checkpoints are saved: a plain directory, or a FUSE daemon over one."""

    def __init__(self, kind, base, passthrough_bin, extra_args=()):
        self.kind = kind
        self.backing = os.path.join(base, f"{kind}-backing")
        self.mnt = os.path.join(base, f"{kind}-mnt") if kind != "plain" else self.backing
        self.pt, self.extra = passthrough_bin, list(extra_args)
        self.proc = None

    def start(self):
        os.makedirs(self.backing, exist_ok=True)
        if self.kind == "plain":
            return self
        os.makedirs(self.mnt, exist_ok=True)
        self.log = self.mnt + ".log"
        if self.kind == "passthrough_ll":
            cmd = [self.pt, "-f", "-o", f"source={self.backing}", self.mnt]
        else:
            cmd = [TPDEFS, self.backing, self.mnt, "-f", "--cache-mib", str(CACHE_MIB), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_mounted(self.mnt, self.proc, self.log)
        return self

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.backing, ignore_errors=True)

    def stats(self):
        return json.loads(os.getxattr(self.mnt, "user.tpde.stats")) if self.kind == "tpdefs" else {}

    def wait_background(self, include_deferred=False, limit=900):
        """Seconds until background work is done: compactions and collections, and with
        include_deferred the compressions that wait for the store to be idle too."""
        t = time.perf_counter()
        if self.kind != "tpdefs":
            return 0.0
        while time.perf_counter() - t < limit:
            s = self.stats()
            if s["maintenance_pending"] == 0 and (
                    not include_deferred or s["compressions_waiting_for_idle"] == 0):
                return time.perf_counter() - t
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind}: background work not done after {limit} s")

    def hwm_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


class Rotation:
    """checkpoint-<n>/model.pt, keeping the newest KEEP_LAST directories."""

    def __init__(self, root):
        self.root, self.n = root, 0

    def next_path(self):
        d = os.path.join(self.root, f"checkpoint-{self.n}")
        os.makedirs(d)
        old = self.n - KEEP_LAST
        if old >= 0:
            shutil.rmtree(os.path.join(self.root, f"checkpoint-{old}"))
        self.n += 1
        return os.path.join(d, "model.pt")


def save_dd(src, dst):
    t = time.perf_counter()
    sh("dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none")
    return time.perf_counter() - t


def save_copyfile(src, dst):
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def warm_inputs(files):
    for f in files:
        sh("cat", f, stdout=subprocess.DEVNULL)


def run_saves(t, files, saves):
    """Sections 1-4 on one target; returns {measurement: value}."""
    rot = Rotation(t.mnt)
    size = os.path.getsize(files[0])
    out = {}
    warm_inputs(files[: saves + 1])
    out["single"] = size / 1e6 / save_dd(files[0], rot.next_path())
    t.wait_background(include_deferred=True)
    series = files[1 : saves + 1]
    secs = sum(save_dd(f, rot.next_path()) for f in series)
    out["dd"] = len(series) * size / 1e6 / secs
    t.wait_background()
    secs = sum(save_copyfile(f, rot.next_path()) for f in series)
    out["copyfile"] = len(series) * size / 1e6 / secs
    t.wait_background()
    intervals = []
    for f in series:
        s = save_dd(f, rot.next_path())
        intervals.append(s + t.wait_background())
    out["paced_interval"] = statistics.median(intervals)
    if t.kind == "tpdefs":
        out["background_after_last"] = t.wait_background()
        out["background_with_deferred"] = out["background_after_last"] + t.wait_background(True)
        s = t.stats()
        out["write_amplification"] = s["object_bytes_written"] / s["bytes_committed"]
        out["ratio"] = s["logical_bytes"] / s["stored_bytes"]
        out["rss_mib"] = t.hwm_mib()
    return out


def run_levers(base, pt, files, saves, variants):
    out = {}
    series = files[1 : saves + 1]
    size = os.path.getsize(files[0])
    for name, args in variants:
        t = Target("tpdefs", base, pt, args).start()
        try:
            rot = Rotation(t.mnt)
            warm_inputs(files[: saves + 1])
            save_dd(files[0], rot.next_path())
            t.wait_background(include_deferred=True)
            secs = sum(save_dd(f, rot.next_path()) for f in series)
            bg = t.wait_background()
            s = t.stats()
            out[name] = {"dd": len(series) * size / 1e6 / secs, "background_after_last": bg,
                         "write_amplification": s["object_bytes_written"] / s["bytes_committed"]}
        finally:
            t.remove()
    return out


def write_tiled(files, dst, total):
    """dst gets the files concatenated (repeated as needed) up to total bytes, then fsync."""
    t = time.perf_counter()
    written = 0
    with open(dst, "wb") as out:
        while written < total:
            for f in files:
                with open(f, "rb") as src:
                    while written < total and (chunk := src.read(min(1 << 20, total - written))):
                        out.write(chunk)
                        written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - t


def cold_read(path):
    t = time.perf_counter()
    sh("dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none")
    return time.perf_counter() - t


def run_big(base, pt, files, gib):
    total = int(gib * (1 << 30))
    warm_inputs(files)
    plain = Target("plain", base, pt).start()
    tp = Target("tpdefs", base, pt).start()
    try:
        plain_path = os.path.join(plain.mnt, "big.pt")
        tp_path = os.path.join(tp.mnt, "big.pt")
        res = {"bytes": total}
        res["write_plain"] = total / 1e6 / write_tiled(files, plain_path, total)
        res["write_tpdefs"] = total / 1e6 / write_tiled(files, tp_path, total)
        res["rss_mib"] = tp.hwm_mib()
        tp.wait_background(include_deferred=True, limit=3600)
        res["stored_ratio"] = (lambda s: s["logical_bytes"] / s["stored_bytes"])(tp.stats())
        tp.stop()
        drop_caches()
        tp.start()
        res["read_tpdefs"] = total / 1e6 / cold_read(tp_path)
        drop_caches()
        res["read_plain"] = total / 1e6 / cold_read(plain_path)
        res["read_rss_mib"] = tp.hwm_mib()
        res["identical"] = subprocess.run(["cmp", "-s", plain_path, tp_path]).returncode == 0
        return res
    finally:
        tp.remove()
        plain.remove()


def med(values):
    values = [v for v in values if v is not None]
    m = statistics.median(values)
    return f"{m:.2f} ({min(values):.2f}-{max(values):.2f})" if m < 20 else \
        f"{m:.0f} ({min(values):.0f}-{max(values):.0f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--saves", type=int, default=3, help="saves per back-to-back series")
    ap.add_argument("--levers", action="store_true")
    ap.add_argument("--big-gib", type=float, default=8.0)
    ap.add_argument("--json", help="write every run's numbers here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("gb_bench: needs root (mounts, drop_caches)")
    files = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.endswith(".pt"))
    if len(files) < a.saves + 1:
        sys.exit(f"gb_bench: need at least {a.saves + 1} checkpoints in {a.dir}")
    size = os.path.getsize(files[0])
    base = tempfile.mkdtemp(prefix="gb-bench-", dir=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
    results = {"runs": [], "levers": [], "big": None}
    kinds = ["plain", "passthrough_ll", "tpdefs"]
    try:
        pt = os.path.join(base, "passthrough_ll")
        sh("gcc", "-O2", "-o", pt, EXAMPLE, *subprocess.check_output(
            ["pkg-config", "--cflags", "--libs", "fuse3"], text=True).split())
        for run in range(a.runs):
            order = kinds[run % 3:] + kinds[: run % 3]
            res = {}
            for kind in order:
                t = Target(kind, base, pt).start()
                try:
                    res[kind] = run_saves(t, files, a.saves)
                finally:
                    t.remove()
                print(f"run {run} {kind}: {res[kind]}", file=sys.stderr)
            results["runs"].append(res)
            if a.levers:
                variants = [("defaults", []), ("--background-io normal", ["--background-io", "normal"]),
                            ("--writeback lazy", ["--writeback", "lazy"]),
                            ("--write-mode raw", ["--write-mode", "raw"]),
                            ("--write-mode compress", ["--write-mode", "compress"])]
                if run % 2:
                    variants.reverse()
                results["levers"].append(run_levers(base, pt, files, a.saves, variants))
                print(f"run {run} levers: {results['levers'][-1]}", file=sys.stderr)
        if a.big_gib > 0:
            results["big"] = run_big(base, pt, files, a.big_gib)
    finally:
        for kind in kinds:
            Target(kind, base, None).remove()
        shutil.rmtree(base, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)

    runs = results["runs"]
    col = lambda kind, key: [r[kind][key] for r in runs]  # noqa: E731
    ratio = lambda key, base_kind: [r["tpdefs"][key] / r[base_kind][key] for r in runs]  # noqa: E731
    print(f"\n## {a.saves}+1 saves of {size / 1e9:.2f} GB ({a.dir}), keep-last-{KEEP_LAST}; "
          f"medians of {len(runs)} runs (min-max)\n")
    print("| save | plain MB/s | passthrough_ll MB/s | tpdefs MB/s | tpdefs / plain | tpdefs / passthrough_ll | target |")
    print("|---|---|---|---|---|---|---|")
    for key, label in (("single", "one save into an idle target, dd bs=1M conv=fsync"),
                       ("dd", f"{a.saves} back to back, dd bs=1M conv=fsync"),
                       ("copyfile", f"{a.saves} back to back, shutil.copyfile + fsync")):
        print(f"| {label} | {med(col('plain', key))} | {med(col('passthrough_ll', key))} | "
              f"{med(col('tpdefs', key))} | {med(ratio(key, 'plain'))} | "
              f"{med(ratio(key, 'passthrough_ll'))} | >= 0.8x plain |")
    print(f"\n| tpdefs, keep-last-{KEEP_LAST}, {1 + 3 * a.saves} saves | median (min-max) |\n|---|---|")
    print(f"| shortest sustainable interval (save + background), s | {med(col('tpdefs', 'paced_interval'))} |")
    print(f"| plain directory's save time, s | {med([size / 1e6 / v for v in col('plain', 'dd')])} |")
    print(f"| background done after the last close (compactions), s | {med(col('tpdefs', 'background_after_last'))} |")
    print(f"| ... and the compressions deferred until idle, s | {med(col('tpdefs', 'background_with_deferred'))} |")
    print(f"| write amplification (object bytes written / logical bytes committed) | "
          f"{med(col('tpdefs', 'write_amplification'))} (target <= 1.6) |")
    print(f"| ratio (logical / stored) | {med(col('tpdefs', 'ratio'))} |")
    print(f"| daemon peak RSS, MiB (cache {CACHE_MIB}) | {med(col('tpdefs', 'rss_mib'))} |")
    if results["levers"]:
        print(f"\n## levers: {a.saves} back-to-back dd saves with one lever changed, same runs\n")
        print("| tpdefs | MB/s | / defaults | background after last close, s | write amplification |")
        print("|---|---|---|---|---|")
        for name in results["levers"][0]:
            lv = results["levers"]
            print(f"| {name} | {med([r[name]['dd'] for r in lv])} | "
                  f"{med([r[name]['dd'] / r['defaults']['dd'] for r in lv])} | "
                  f"{med([r[name]['background_after_last'] for r in lv])} | "
                  f"{med([r[name]['write_amplification'] for r in lv])} |")
    if results["big"]:
        b = results["big"]
        print(f"\n## one {b['bytes'] / (1 << 30):.1f} GiB file (checkpoints concatenated), written and fsynced, "
              f"read cold\n")
        print("| | plain MB/s | tpdefs MB/s | tpdefs / plain |\n|---|---|---|---|")
        print(f"| write | {b['write_plain']:.0f} | {b['write_tpdefs']:.0f} | {b['write_tpdefs'] / b['write_plain']:.2f} |")
        print(f"| read, cold | {b['read_plain']:.0f} | {b['read_tpdefs']:.0f} | {b['read_tpdefs'] / b['read_plain']:.2f} (target >= 1) |")
        print(f"\ntpdefs peak RSS writing {b['rss_mib']:.0f} MiB, reading {b['read_rss_mib']:.0f} MiB "
              f"(limit cache {CACHE_MIB} + 256 = {CACHE_MIB + 256} MiB); ratio {b['stored_ratio']:.2f}; "
              f"read back {'bit-exact' if b['identical'] else 'DIFFERENT BYTES'}")
        if not b["identical"]:
            sys.exit("gb_bench: the big file read back differs")


if __name__ == "__main__":
    main()

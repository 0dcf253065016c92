#!/usr/bin/python3
"""mount_bench.py: tpdefs against libfuse's passthrough_ll example, same backing disk, same run.

Usage: scripts/bench/mount_bench.py [--runs N] [--big-gib G] DIR

DIR holds step_*.pt checkpoints (name order = training order), e.g. the `full` variant of
scripts/bench/gen_trajectories.sh. passthrough_ll is compiled from the source Debian ships in
/usr/share/doc/libfuse3-dev/examples. Both file systems are mounted over directories on the
same disk (under $BENCH_TMPDIR, default /var/tmp). Prints tables:

1. sequential write of every checkpoint through the mount (dd bs=1M conv=fsync: data on disk
   before dd returns), MB/s of the whole trajectory, median over runs (target >= 0.8x):
   back to back, and paced (each save once the mount's background work for the previous
   one is done, as when a run saves every few minutes; for passthrough_ll the same pause);
2. sequential read of the newest checkpoint, cold (both daemons remounted and the kernel's
   page cache dropped before each read) and warm (read again, same mount; the median of 5
   reads): MB/s, median over runs; warm is compared with a plain directory's page-cache read (target within 2x);
3. tpdefs daemon peak RSS (VmHWM) while a --big-gib file is written, against its cache size
   + 256 MiB.
Needs root (mounting, drop_caches).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TPDEFS = os.environ.get("TPDEFS", os.path.join(HERE, "..", "..", "build", "tpdefs"))
EXAMPLE = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"
CACHE_MIB = 512


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def wait_mounted(mnt, proc, log):
    for _ in range(400):
        if os.path.ismount(mnt):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited during start-up: {open(log).read()}")
        time.sleep(0.05)
    raise RuntimeError(f"{mnt} not mounted after 20 s")


class Mount:
    """A daemon in the foreground over a backing directory; unmounted on exit, always."""

    def __init__(self, kind, backing, mnt, passthrough_bin):
        self.kind, self.backing, self.mnt, self.pt = kind, backing, mnt, passthrough_bin
        self.proc = None

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.log = self.mnt.rstrip("/") + ".log"
        if self.kind == "tpdefs":
            cmd = [TPDEFS, self.backing, self.mnt, "-f", "--cache-mib", str(CACHE_MIB)]
        else:
            cmd = [self.pt, "-f", "-o", f"source={self.backing}", self.mnt]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_mounted(self.mnt, self.proc, self.log)
        return self

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
            self.proc.kill()
            self.proc.wait()
        return False

    def hwm_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0


def wait_idle(m):
    """Until the mount's background work (re-encodings, collections) is done."""
    if m.kind != "tpdefs":
        return
    import json
    for _ in range(600):
        if json.loads(os.getxattr(m.mnt, "user.tpde.stats"))["maintenance_pending"] == 0:
            return
        time.sleep(0.05)


def dd(src, dst, fsync=False):
    args = ["dd", f"if={src}", f"of={dst}", "bs=1M", "status=none"]
    if fsync:
        args.append("conv=fsync")
    t = time.perf_counter()
    sh(*args)
    return time.perf_counter() - t


WARM_READS = 5


def warm_read(path, size):
    """MB/s of a page-cache read: median of WARM_READS reads (one takes ~10 ms, too short
    to time alone on a noisy machine)."""
    return statistics.median(size / 1e6 / dd(path, "/dev/null") for _ in range(WARM_READS))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-gib", type=float, default=2.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("mount_bench: needs root (mounts, drop_caches)")
    files = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.endswith(".pt"))
    if len(files) < 2:
        sys.exit("mount_bench: need checkpoints in DIR")
    total = sum(os.path.getsize(f) for f in files)
    base = tempfile.mkdtemp(prefix="mount-bench-", dir=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
    try:
        pt = os.path.join(base, "passthrough_ll")
        sh("gcc", "-O2", "-o", pt, EXAMPLE, *subprocess.check_output(
            ["pkg-config", "--cflags", "--libs", "fuse3"], text=True).split())
        def warm_inputs():
            """Inputs come from the page cache for both: each cold read drops the caches."""
            for f in files:
                sh("cat", f, stdout=subprocess.DEVNULL)

        write = {"tpdefs": [], "passthrough_ll": []}
        paced = {"tpdefs": [], "passthrough_ll": []}
        cold = {"tpdefs": [], "passthrough_ll": [], "plain": []}
        warm = {"tpdefs": [], "passthrough_ll": [], "plain": []}
        newest = files[-1]
        size = os.path.getsize(newest)
        for run in range(a.runs):
            for kind in ("tpdefs", "passthrough_ll"):
                backing = os.path.join(base, f"{kind}-{run}")
                mnt = os.path.join(base, f"{kind}-mnt")
                os.makedirs(backing)
                with Mount(kind, backing, mnt, pt) as m:
                    warm_inputs()
                    t = 0.0
                    for i, f in enumerate(files):
                        os.makedirs(os.path.join(m.mnt, f"checkpoint-{i}"), exist_ok=True)
                        t += dd(f, os.path.join(m.mnt, f"checkpoint-{i}", "model.pt"), fsync=True)
                    write[kind].append(total / 1e6 / t)
                    wait_idle(m)
                    for f in files:
                        os.remove(os.path.join(m.mnt, f"checkpoint-{files.index(f)}", "model.pt"))
                    wait_idle(m)
                    t = 0.0
                    for i, f in enumerate(files):
                        t += dd(f, os.path.join(m.mnt, f"checkpoint-{i}", "model.pt"), fsync=True)
                        wait_idle(m)
                    paced[kind].append(total / 1e6 / t)
                target = os.path.join(mnt, f"checkpoint-{len(files) - 1}", "model.pt")
                drop_caches()
                with Mount(kind, backing, mnt, pt) as m:  # fresh daemon: its caches are cold too
                    cold[kind].append(size / 1e6 / dd(target, "/dev/null"))
                    warm[kind].append(warm_read(target, size))
                    if subprocess.run(["cmp", target, newest]).returncode != 0:
                        sys.exit(f"mount_bench: {kind} returned different bytes for {target}")
                shutil.rmtree(backing)
            plain = os.path.join(base, "plain")
            os.makedirs(plain, exist_ok=True)
            shutil.copy(newest, os.path.join(plain, "model.pt"))
            drop_caches()
            cold["plain"].append(size / 1e6 / dd(os.path.join(plain, "model.pt"), "/dev/null"))
            warm["plain"].append(warm_read(os.path.join(plain, "model.pt"), size))

        med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in
               (("write", write), ("paced", paced), ("cold", cold), ("warm", warm))}
        print(f"\n## tpdefs vs passthrough_ll: {len(files)} checkpoints of {a.dir} ({total / 1e6:.0f} MB), "
              f"medians of {a.runs} runs\n")
        print("| measurement | tpdefs MB/s | passthrough_ll MB/s | plain dir MB/s | tpdefs / passthrough | target |")
        print("|---|---|---|---|---|---|")
        w, c, r = med["write"], med["cold"], med["warm"]
        print(f"| sequential write, dd bs=1M conv=fsync | {w['tpdefs']:.0f} | {w['passthrough_ll']:.0f} | - | "
              f"{w['tpdefs'] / w['passthrough_ll']:.2f} | >= 0.8 |")
        p = med["paced"]
        print(f"| sequential write, paced (background idle before each save) | {p['tpdefs']:.0f} | "
              f"{p['passthrough_ll']:.0f} | - | {p['tpdefs'] / p['passthrough_ll']:.2f} | >= 0.8 |")
        print(f"| read newest, cold | {c['tpdefs']:.0f} | {c['passthrough_ll']:.0f} | {c['plain']:.0f} | "
              f"{c['tpdefs'] / c['passthrough_ll']:.2f} | >= 0.8 |")
        print(f"| read newest, warm | {r['tpdefs']:.0f} | {r['passthrough_ll']:.0f} | {r['plain']:.0f} | "
              f"{r['tpdefs'] / r['passthrough_ll']:.2f} | plain/tpdefs = {r['plain'] / r['tpdefs']:.2f} <= 2 |")

        # 3. peak RSS while writing a big file
        backing = os.path.join(base, "big")
        os.makedirs(backing)
        with Mount("tpdefs", backing, os.path.join(base, "big-mnt"), pt) as m:
            target = int(a.big_gib * (1 << 30))
            written = 0
            t = time.perf_counter()
            with open(os.path.join(m.mnt, "big.pt"), "wb") as out:
                while written < target:
                    for f in files:
                        with open(f, "rb") as src:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
                                written += len(chunk)
                        if written >= target:
                            break
            secs = time.perf_counter() - t
            hwm = m.hwm_mib()
        print(f"\n| daemon peak RSS writing {written / (1 << 30):.2f} GiB | limit (cache {CACHE_MIB} MiB + 256) "
              f"| write MB/s |\n|---|---|---|\n| {hwm:.0f} MiB | {CACHE_MIB + 256} MiB | {written / 1e6 / secs:.0f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

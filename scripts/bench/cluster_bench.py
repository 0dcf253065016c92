#!/usr/bin/python3
"""cluster_bench.py: tpdefs daemons on 1, 2, 3 hosts sharing a store on GlusterFS, against
writing the same files straight onto the GlusterFS mounts, in one run.

Usage: scripts/bench/cluster_bench.py [--runs N] [--files K] DIR

DIR holds step_*.pt checkpoints (e.g. /work/data/traj/full): host h saves the last K of them
as rank h (each host its own files, all hosts at once, each file fsynced at close), then
every host reads back the files of another host, cold (its daemon restarted, page caches
dropped). Prints, per host count: aggregate write and read MB/s through tpdefs and straight
onto GlusterFS (medians of N runs, min-max), the ratio of the two (target >= 0.8), the
latency of committing a small file, and the compression ratio of the store against the same
files in a local store (target: equal). Needs root, /dev/fuse, glusterfs-server.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "cluster"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "mount"))
import gluster_cluster as gcl  # noqa: E402
from mount_util import Mount  # noqa: E402

BUILD = os.path.join(HERE, "..", "..", "build")
TPDEFS = os.environ.get("TPDEFS", os.path.join(BUILD, "tpdefs"))
TPDE = os.environ.get("TPDE", os.path.join(BUILD, "tpde"))


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def copy_fsync(src, dst):
    with open(src, "rb") as i, open(dst, "wb") as o:
        while True:
            b = i.read(1 << 20)
            if not b:
                break
            o.write(b)
        o.flush()
        os.fsync(o.fileno())


def read_all(path):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += len(b)


def parallel(jobs):
    """Runs the callables at once; returns the wall time."""
    errors = []

    def run(j):
        try:
            j()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    t = time.monotonic()
    for x in threads:
        x.start()
    for x in threads:
        x.join()
    if errors:
        raise errors[0]
    return time.monotonic() - t


def fmt(values):
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


class Daemons:
    def __init__(self, gc, hosts, base):
        self.gc, self.hosts, self.base = gc, hosts, base
        self.mounts = []

    def __enter__(self):
        for h in range(self.hosts):
            store = os.path.join(self.gc.clients[h].mount, "store")
            mnt = os.path.join(self.base, f"host{h}")
            os.makedirs(mnt, exist_ok=True)
            work = tempfile.mkdtemp(dir=self.base)
            m = Mount(os.path.abspath(TPDEFS), store, mnt, os.path.join(work, "log"),
                      ["--node", f"host{h}"], [work])
            m.start(30)
            self.mounts.append(m)
        return self

    def __exit__(self, *exc):
        for m in self.mounts:
            m.unmount()
            m.remove_dirs()


def wait_idle(mnt):
    import json
    while json.loads(os.getxattr(mnt, "user.tpde.stats"))["maintenance_pending"]:
        time.sleep(0.2)


def rel(f, h):
    """Where rank h saves checkpoint file f: checkpoint-<step>/rank<h>.pt, as a job does."""
    step = "".join(c for c in os.path.basename(f) if c.isdigit())
    return os.path.join(f"checkpoint-{int(step)}", f"rank{h}.pt")


def save(files, h, root):
    for f in files:
        dst = os.path.join(root, rel(f, h))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        copy_fsync(f, dst)


def load(files, h, root):
    for f in files:
        read_all(os.path.join(root, rel(f, h)))


def one_run(gc, hosts, files, base, results):
    total = sum(os.path.getsize(f) for f in files) * hosts
    # Straight onto GlusterFS: each host copies its files into its own client mount.
    plain = [os.path.join(gc.clients[h].mount, "plain") for h in range(hosts)]
    drop_caches()
    t = parallel([lambda h=h: save(files, h, plain[h]) for h in range(hosts)])
    results.setdefault(("write", "gluster", hosts), []).append(total / t / 1e6)
    drop_caches()
    t = parallel([lambda h=h: load(files, (h + 1) % hosts, plain[h]) for h in range(hosts)])
    results.setdefault(("read", "gluster", hosts), []).append(total / t / 1e6)
    shutil.rmtree(os.path.join(gc.clients[0].mount, "plain"))
    # Through tpdefs: one daemon per host over the same store.
    with Daemons(gc, hosts, base) as d:
        drop_caches()
        t = parallel([lambda h=h, m=m: save(files, h, m.mnt) for h, m in enumerate(d.mounts)])
        results.setdefault(("write", "tpdefs", hosts), []).append(total / t / 1e6)
        # A small file's commit (open, write 4 KiB, close): the metadata round trips.
        lat = []
        for k in range(10):
            p = os.path.join(d.mounts[0].mnt, f"small-{k}")
            t0 = time.monotonic()
            with open(p, "wb") as f:
                f.write(b"x" * 4096)
            lat.append((time.monotonic() - t0) * 1000)
        results.setdefault(("small_commit_ms", "tpdefs", hosts), []).append(statistics.median(lat))
        for m in d.mounts:
            wait_idle(m.mnt)
    with Daemons(gc, hosts, base) as d:   # restarted: nothing cached in the daemons
        drop_caches()
        t = parallel([lambda h=h, m=m: load(files, (h + 1) % hosts, m.mnt)
                      for h, m in enumerate(d.mounts)])
        results.setdefault(("read", "tpdefs", hosts), []).append(total / t / 1e6)
    store = os.path.join(gc.clients[0].mount, "store")
    stored = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
                 os.walk(os.path.join(store, "chains")) for f in fs if "/objects" in dp)
    results.setdefault(("ratio", "tpdefs", hosts), []).append(total / stored)
    shutil.rmtree(store)


def local_ratio(files, hosts, base):
    src = os.path.join(base, "local-src")
    for h in range(hosts):
        for f in files:
            dst = os.path.join(src, rel(f, h))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(f, dst)
            except OSError:
                shutil.copyfile(f, dst)
    store = os.path.join(base, "local-store")
    subprocess.run([TPDE, "import", src, store], check=True, capture_output=True)
    stored = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
                 os.walk(os.path.join(store, "chains")) for f in fs if "/objects" in dp)
    total = sum(os.path.getsize(f) for f in files) * hosts
    shutil.rmtree(store)
    shutil.rmtree(src)
    return total / stored


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=2)
    a = ap.parse_args()
    why = gcl.skip_reason()
    if why:
        sys.exit(f"cluster_bench: cannot run: {why}")
    files = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.endswith(".pt"))
    files = files[-a.files:]
    base = tempfile.mkdtemp(prefix="cluster-bench-")
    results = {}
    try:
        with gcl.GlusterCluster(clients=3, bricks=1) as gc:
            for r in range(a.runs):
                for hosts in (1, 2, 3):
                    one_run(gc, hosts, files, base, results)
                    print(f"run {r + 1}, {hosts} host(s) done", file=sys.stderr, flush=True)
        local = {h: local_ratio(files, h, base) for h in (1, 2, 3)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    size = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"\n{len(files)} checkpoints of {a.dir} per host ({size:.0f} MB), {a.runs} runs, "
          f"medians (min-max); load average {os.getloadavg()[0]:.1f}\n")
    print("| hosts | write MB/s tpdefs | write MB/s GlusterFS | tpdefs/GlusterFS | read MB/s tpdefs "
          "| read MB/s GlusterFS | tpdefs/GlusterFS | small commit ms | ratio | local ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for h in (1, 2, 3):
        w_t, w_g = results[("write", "tpdefs", h)], results[("write", "gluster", h)]
        r_t, r_g = results[("read", "tpdefs", h)], results[("read", "gluster", h)]
        print(f"| {h} | {fmt(w_t)} | {fmt(w_g)} | "
              f"{statistics.median(w_t) / statistics.median(w_g):.2f} | {fmt(r_t)} | {fmt(r_g)} | "
              f"{statistics.median(r_t) / statistics.median(r_g):.2f} | "
              f"{statistics.median(results[('small_commit_ms', 'tpdefs', h)]):.0f} | "
              f"{statistics.median(results[('ratio', 'tpdefs', h)]):.3f} | {local[h]:.3f} |")


if __name__ == "__main__":
    main()

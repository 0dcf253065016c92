#!/usr/bin/python3
"""Load on a real tpdefs mount: fio with 8 verifying jobs, stress-ng's file-system
stressors, and 8 concurrent writers of 256 MiB checkpoints while readers read the previous
checkpoint and a keep-last-2 rotation deletes the one before; the daemon's RSS is sampled
throughout and must stay within the configured cache plus a fixed allowance.

Checks: fio_8_jobs_verify (fio --verify=xxhash, 8 jobs x 32 MiB, exit 0, no error, every
byte moved), stress_ng_filesystem (skipped, saying why, without stress-ng),
writers_8x256MiB (every write and close succeeds), readers_during_writes (every read of an
older checkpoint bit-exact), rotation_during_writes, all_files_exact_after (sha256 of every
remaining file), rss_bounded (peak VmRSS <= cache + RSS_ALLOWANCE_MIB), fsck_clean,
daemon_clean_exit. Bounded in time: fio by size, stress-ng by --timeout, the checkpoints by
their count (3 rounds of 8 x 256 MiB).

Usage: load_test.py TPDEFS_BIN [RESULTS_DIR]   (tpde is taken from beside TPDEFS_BIN).
Results: RESULTS_DIR/mount_load.count. Exits 77 (skip) without /dev/fuse, fusermount3 or root.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import Results, mounted, require_mount  # noqa: E402

import numpy as np  # noqa: E402  (Debian's python3-numpy, installed with python3-torch)

CACHE_MIB = 128
# Beyond the cache: the encode pool's blocks in flight (two per worker), each open file's
# pending block and parent reference, libfuse's request buffers (1 MiB per thread), the
# heap's slack. store_bench asserts the same allowance for 1 GiB commits.
RSS_ALLOWANCE_MIB = 256
WRITERS = 8
FILE_MIB = 256
ROUNDS = 3
KEEP = 2
STRESS_SECONDS = 20
STRESSORS = ["hdd", "dir", "dentry", "rename", "fstat", "seek"]
CHUNK = 1 << 20


def chunk_data(base, rnd, j):
    """Chunk j of a rank's checkpoint in round rnd: the rank's weights with a few moved."""
    a = base.copy()
    idx = (np.arange(0, len(a), 97, dtype=np.int64) * (rnd + 1) + j) % len(a)
    a[idx] += np.float32(1e-3 * (rnd + 1))
    return a.tobytes()


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.05)


def run_fio(res, mnt, logdir):
    d = os.path.join(mnt, "fio")
    os.mkdir(d)
    out = os.path.join(logdir, "fio.json")
    r = subprocess.run(["fio", "--name=load", f"--directory={d}", "--numjobs=8", "--size=32M",
                        "--bs=256k", "--rw=write", "--ioengine=psync", "--fallocate=none",
                        "--verify=xxhash", "--do_verify=1", "--verify_fatal=1",
                        "--verify_state_save=0", "--output-format=json", f"--output={out}"],
                       capture_output=True, text=True, timeout=300, cwd=logdir)
    problems = [] if r.returncode == 0 else [f"fio exit {r.returncode}: {r.stderr[-300:]}"]
    try:
        text = open(out).read()
        jobs = json.loads(text[text.index("{"):])["jobs"]
        written = sum(j["write"]["io_bytes"] for j in jobs)
        verified = sum(j["read"]["io_bytes"] for j in jobs)
        errors = sum(j["error"] for j in jobs)
        if len(jobs) != 8 or errors or written != 8 * 32 * CHUNK or verified != written:
            problems.append(f"{len(jobs)} jobs, {errors} errors, wrote {written}, "
                            f"verified {verified} bytes")
    except (OSError, ValueError, KeyError) as e:
        problems.append(f"no fio result: {e}")
    res.check("fio_8_jobs_verify", not problems, "; ".join(problems))
    shutil.rmtree(d)


def run_stress_ng(res, mnt):
    if not shutil.which("stress-ng"):
        res.skip_one("stress_ng_filesystem", "stress-ng is not installed (scripts/setup.sh "
                     "installs it)")
        return
    d = os.path.join(mnt, "stress")
    os.mkdir(d)
    # File-system stressors that stay within what tpdefs supports (no mknod, no O_DIRECT).
    cmd = ["stress-ng", "--temp-path", d, "--timeout", f"{STRESS_SECONDS}s", "--verify",
           "--metrics-brief", "--hdd", "2", "--hdd-bytes", "16M", "--hdd-opts", "wr-seq,rd-seq",
           "--seek-size", "8M"]
    for n in STRESSORS[1:]:
        cmd += [f"--{n}", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=STRESS_SECONDS + 120)
    out = r.stdout + r.stderr
    bad = [line for line in out.splitlines()
           if "fail" in line.lower() and "failed: 0" not in line.lower()
           and "0 failed" not in line.lower()]
    # Each stressor must have done work (stress-ng 0.15 prints bogo ops per stressor).
    ops = {}
    for line in out.splitlines():
        f = line.split("] ", 1)[-1].split()
        if "metrc:" in line and len(f) > 1 and f[1].isdigit():
            ops[f[0]] = int(f[1])
    idle = [n for n in STRESSORS if ops.get(n, 0) == 0]
    print(f"stress-ng bogo ops: {ops}", flush=True)
    res.check("stress_ng_filesystem", r.returncode == 0 and not bad and not idle and
              "successful run completed" in out,
              f"stressors without work: {idle}; "
              f"exit {r.returncode}: {' | '.join(bad[:4]) or out[-400:]}")
    shutil.rmtree(d, ignore_errors=True)


def run_checkpoints(res, mnt):
    rng = np.random.default_rng(18)
    bases = [rng.random(CHUNK // 4, dtype=np.float32) for _ in range(WRITERS)]
    written = {}                         # path -> sha256 of what its writer wrote
    lock = threading.Lock()
    errors = {"write": [], "read": [], "rotate": []}

    def path(rnd, rank):
        return os.path.join(mnt, "ckpt", f"checkpoint-{rnd}", f"rank-{rank}.bin")

    def writer(rnd, rank):
        h = hashlib.sha256()
        try:
            with open(path(rnd, rank), "wb", buffering=0) as f:
                for j in range(FILE_MIB):
                    data = chunk_data(bases[rank], rnd, j)
                    h.update(data)
                    view = memoryview(data)
                    while view:
                        view = view[f.write(view):]
            with lock:
                written[path(rnd, rank)] = h.hexdigest()
        except OSError as e:
            errors["write"].append(f"{path(rnd, rank)}: {e}")

    def reader(rnd, stop):
        reads = 0
        while not stop.is_set():
            for rank in range(WRITERS):
                p = path(rnd, rank)
                h = hashlib.sha256()
                try:
                    with open(p, "rb") as f:
                        for chunk in iter(lambda: f.read(CHUNK), b""):
                            h.update(chunk)
                except OSError as e:
                    errors["read"].append(f"{p}: {e}")
                    return
                if h.hexdigest() != written[p]:
                    errors["read"].append(f"{p}: content differs from what was written")
                    return
                reads += 1
                if stop.is_set():
                    break
        reader.total = getattr(reader, "total", 0) + reads

    def rotate(rnd):
        try:
            shutil.rmtree(os.path.join(mnt, "ckpt", f"checkpoint-{rnd}"))
            with lock:
                for rank in range(WRITERS):
                    written.pop(path(rnd, rank), None)
        except OSError as e:
            errors["rotate"].append(f"checkpoint-{rnd}: {e}")

    os.mkdir(os.path.join(mnt, "ckpt"))
    t0 = time.monotonic()
    rotated = 0
    for rnd in range(ROUNDS):
        os.mkdir(os.path.join(mnt, "ckpt", f"checkpoint-{rnd}"))
        stop = threading.Event()
        side = []
        if rnd >= 1:
            side += [threading.Thread(target=reader, args=(rnd - 1, stop)) for _ in range(2)]
        if rnd >= KEEP:
            side.append(threading.Thread(target=rotate, args=(rnd - KEEP,)))
            rotated += 1
        writers = [threading.Thread(target=writer, args=(rnd, k)) for k in range(WRITERS)]
        for t in side + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in side:
            t.join()
    seconds = time.monotonic() - t0
    total = ROUNDS * WRITERS * FILE_MIB
    print(f"checkpoints: {ROUNDS} rounds of {WRITERS} x {FILE_MIB} MiB in {seconds:.1f} s "
          f"({total / seconds:.0f} MiB/s written), {getattr(reader, 'total', 0)} file reads "
          f"during writes", flush=True)
    res.check("writers_8x256MiB", not errors["write"] and
              len(written) == (ROUNDS - rotated) * WRITERS, "; ".join(errors["write"][:3]))
    res.check("readers_during_writes", not errors["read"] and getattr(reader, "total", 0) > 0,
              "; ".join(errors["read"][:3]) or "no read completed")
    res.check("rotation_during_writes", not errors["rotate"] and rotated > 0 and
              not os.path.exists(os.path.join(mnt, "ckpt", "checkpoint-0")),
              "; ".join(errors["rotate"]))
    bad = []
    for p, want in sorted(written.items()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        if h.hexdigest() != want:
            bad.append(os.path.relpath(p, mnt))
    res.check("all_files_exact_after", not bad and written, f"differ: {bad[:4]}")


def main():
    tpdefs = os.path.abspath(sys.argv[1])
    res = Results("mount_load", sys.argv[2] if len(sys.argv) > 2 else None)
    require_mount(res, tpdefs)
    tpde = os.path.join(os.path.dirname(tpdefs), "tpde")
    base = os.environ.get("TMPDIR")
    with mounted(tpdefs, opts=["--cache-mib", str(CACHE_MIB)], base=base, keep_store=True,
                 watchdog=900) as m:
        store = m.store
        rss = RssSampler(m.proc.pid)
        rss.start()
        logdir = os.path.dirname(m.log)
        run_fio(res, m.mnt, logdir)
        run_stress_ng(res, m.mnt)
        run_checkpoints(res, m.mnt)
        # An unmount waits for the rebases the deletes started (8 x 256 MiB here): wait for
        # them first, as `tpde stats --wait-idle` lets a user do, so the unmount is prompt.
        t0 = time.monotonic()
        r = subprocess.run([tpde, "stats", "--wait-idle", "--timeout", "600", m.mnt],
                           capture_output=True, text=True, timeout=660)
        print(f"maintenance after the load: {time.monotonic() - t0:.1f} s to idle "
              f"(exit {r.returncode})", flush=True)
        rss.stop.set()
        rss.join()
        peak = rss.peak_kib // 1024
        print(f"daemon peak RSS {peak} MiB (cache {CACHE_MIB} MiB + allowance "
              f"{RSS_ALLOWANCE_MIB} MiB)", flush=True)
        res.check("rss_bounded", 0 < peak <= CACHE_MIB + RSS_ALLOWANCE_MIB,
                  f"peak VmRSS {peak} MiB > {CACHE_MIB} + {RSS_ALLOWANCE_MIB} MiB")
    res.check("daemon_clean_exit", m.returncode == 0,
              f"exit {m.returncode}, teardown {m.teardown_notes}: {m.final_log[-400:]}")
    try:
        r = subprocess.run([tpde, "fsck", store], capture_output=True, text=True, timeout=600)
        res.check("fsck_clean", r.returncode == 0, (r.stdout + r.stderr)[-600:])
    finally:
        shutil.rmtree(store, ignore_errors=True)
    res.finish()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Concurrent writers and readers on a real tpdefs mount.

8 writer processes each write their own 8 MiB file of random data in 1 MiB writes, with
an fsync after every write, then close it and record its sha256 (in a plain directory
outside the mount). Meanwhile 4 reader processes repeatedly pick files that are already
closed and read them whole (close-to-open: every byte must be there), checking the
sha256. At the end every file is verified again, the listing is checked, and the store is
remounted and verified once more.

Counted checks: writer_N (8), reader_N (4: no mismatch, no error, at least one read),
listing, final_N (8), remount_verify, daemon_clean_exit.

Usage: concurrency_test.py TPDEFS_BIN [RESULTS_DIR]   (RESULTS_DIR defaults to $RESULTS_DIR)
Results: RESULTS_DIR/mount_concurrency.count. Exits 77 (skip) without /dev/fuse,
fusermount3 or root.
"""
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import sha_file, MountError, Results, mounted, require_mount  # noqa: E402

WRITERS, READERS = 8, 4
FILE_SIZE = 8 << 20
CHUNK = 1 << 20
PHASE_TIMEOUT = 75          # seconds for the concurrent phase; then the daemon is killed


def writer(i, dirpath, registry, results):
    try:
        time.sleep(0.15 * i)           # staggered: early files close while others are written
        data = os.urandom(FILE_SIZE)
        path = os.path.join(dirpath, f"w{i}.bin")
        t0 = time.monotonic()
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        written = 0
        try:
            for off in range(0, FILE_SIZE, CHUNK):
                view = memoryview(data)[off:off + CHUNK]
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
                os.fsync(fd)
        finally:
            os.close(fd)
        sha = hashlib.sha256(data).hexdigest()
        rec = {"path": path, "sha": sha, "size": FILE_SIZE, "closed_at": time.time()}
        tmp = os.path.join(registry, f".w{i}.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(registry, f"w{i}.json"))
        results.put(("writer", i, written == FILE_SIZE, f"wrote {written} bytes in "
                     f"{time.monotonic() - t0:.1f} s"))
    except Exception as e:
        results.put(("writer", i, False, f"{type(e).__name__}: {e}"))


def reader(j, registry, done_flag, results):
    rnd = random.Random(j)
    reads = mismatches = errors = 0
    reads_during_writes = 0
    details = []
    extra_rounds = 0
    deadline = time.monotonic() + PHASE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            finished = os.path.exists(done_flag)
            recs = []
            for name in os.listdir(registry):
                if name.endswith(".json"):
                    with open(os.path.join(registry, name)) as f:
                        recs.append(json.load(f))
            if not recs:
                if finished:
                    break
                time.sleep(0.02)
                continue
            rec = rnd.choice(recs)
            chunk = rnd.choice([CHUNK, 128 << 10, 100_003, 4 << 20])
            try:
                sha, size = sha_file(rec["path"], chunk)
                reads += 1
                if not finished:
                    reads_during_writes += 1
                if (sha, size) != (rec["sha"], rec["size"]):
                    mismatches += 1
                    if len(details) < 3:
                        details.append(f"{os.path.basename(rec['path'])}: read {size} bytes "
                                       f"sha {sha[:12]}, expected {rec['size']} sha {rec['sha'][:12]}"
                                       f" (chunk {chunk})")
            except OSError as e:
                errors += 1
                if len(details) < 3:
                    details.append(f"{os.path.basename(rec['path'])}: {e}")
            if finished:
                extra_rounds += 1
                if extra_rounds >= 3:
                    break
        ok = reads > 0 and mismatches == 0 and errors == 0
        results.put(("reader", j, ok, f"{reads} reads ({reads_during_writes} while writers ran), "
                     f"{mismatches} mismatches, {errors} errors; " + "; ".join(details)))
    except Exception as e:
        results.put(("reader", j, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))


def run(res, tpdefs, base):
    registry = os.path.join(base, "registry")
    os.mkdir(registry)
    done_flag = os.path.join(base, "writers-done")
    store = None
    expected = {}
    # A small decoded-block cache (64 MiB of files): readers also go through eviction.
    with mounted(tpdefs, base=base, keep_store=True, opts=["--cache-mib", "16"],
                 watchdog=PHASE_TIMEOUT + 40) as m:
        store = m.store
        d = os.path.join(m.mnt, "conc")
        os.mkdir(d)
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        writers = [ctx.Process(target=writer, args=(i, d, registry, results)) for i in range(WRITERS)]
        readers = [ctx.Process(target=reader, args=(j, registry, done_flag, results))
                   for j in range(READERS)]
        killed = []

        def watchdog():
            killed.append(True)
            print(f"WATCHDOG: concurrent phase still running after {PHASE_TIMEOUT + 10} s: "
                  "killing the daemon", flush=True)
            m.kill()
        timer = threading.Timer(PHASE_TIMEOUT + 10, watchdog)
        timer.daemon = True
        timer.start()
        t0 = time.monotonic()
        for p in readers + writers:
            p.start()
        got = {}
        try:
            end = time.monotonic() + PHASE_TIMEOUT + 20
            while len(got) < WRITERS + READERS and time.monotonic() < end:
                try:
                    kind, idx, ok, detail = results.get(timeout=1)
                except Exception:
                    if not any(p.is_alive() for p in writers + readers) and results.empty():
                        break
                    continue
                got[(kind, idx)] = (ok, detail)
                if kind == "writer" and sum(1 for k in got if k[0] == "writer") == WRITERS:
                    open(done_flag, "w").close()
        finally:
            open(done_flag, "w").close()
            timer.cancel()
            for p in writers + readers:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
        print(f"concurrent phase {time.monotonic() - t0:.1f} s", flush=True)
        for i in range(WRITERS):
            ok, detail = got.get(("writer", i), (False, "no result (process died or hung)"))
            res.check(f"writer_{i}", ok, detail)
            if ok:
                print(f"  writer_{i}: {detail}")
        for j in range(READERS):
            ok, detail = got.get(("reader", j), (False, "no result (process died or hung)"))
            res.check(f"reader_{j}", ok, detail)
            print(f"  reader_{j}: {detail}")
        for name in sorted(os.listdir(registry)):
            if name.endswith(".json"):
                with open(os.path.join(registry, name)) as f:
                    rec = json.load(f)
                expected[os.path.basename(rec["path"])] = (rec["sha"], rec["size"])
        if killed or not m.alive():
            res.check("daemon_alive", False, "daemon was killed or died; log:\n" + m.log_text(2000))
        try:
            listing = {e.name: e.stat().st_size for e in os.scandir(d)}
        except OSError as e:
            listing = repr(e)
        want = {f"w{i}.bin": FILE_SIZE for i in range(WRITERS)}
        res.check("listing", listing == want, f"listing {listing}")
        for i in range(WRITERS):
            n = f"w{i}.bin"
            try:
                got_sha = sha_file(os.path.join(d, n), CHUNK)
            except OSError as e:
                got_sha = repr(e)
            res.check(f"final_{i}", n in expected and got_sha == expected[n],
                      f"read {got_sha}, expected {expected.get(n)}")
    res.check("daemon_clean_exit", m.returncode == 0 and not m.teardown_notes,
              f"exit {m.returncode}; teardown {m.teardown_notes}; log tail:\n{m.final_log[-2000:]}")
    with mounted(tpdefs, store_dir=store, base=base, watchdog=60) as m2:
        bad = []
        for n, want_sha in sorted(expected.items()):
            try:
                got_sha = sha_file(os.path.join(m2.mnt, "conc", n), CHUNK)
            except OSError as e:
                got_sha = repr(e)
            if got_sha != want_sha:
                bad.append(f"{n}: {got_sha} != {want_sha}")
        res.check("remount_verify", len(expected) == WRITERS and not bad,
                  f"{len(expected)} files recorded; " + "; ".join(bad[:4]))


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    tpdefs = sys.argv[1]
    res = Results("mount_concurrency", sys.argv[2] if len(sys.argv) > 2 else None)
    require_mount(res, tpdefs)
    base = tempfile.mkdtemp(prefix="tpdefs-conc-")
    t0 = time.monotonic()
    try:
        run(res, tpdefs, base)
    except MountError as e:
        res.check("mount", False, str(e))
    except Exception as e:
        res.check("run", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"total {time.monotonic() - t0:.1f} s")
    res.finish()


if __name__ == "__main__":
    main()

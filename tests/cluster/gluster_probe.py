#!/usr/bin/python3
"""Measures what GlusterFS does for several clients of one volume: locks, lock release
when a holder or its host dies, freezes or is cut off, staleness across clients,
O_EXCL / RENAME_NOREPLACE / link races, xattr limits, metadata rates and throughput.

A measurement tool, not a CI test; its lock and race helpers (try_lock, Holder,
wait_acquire, race_excl_create, ...) are meant for reuse by tests.

    gluster_probe.py [--only SECTION,...] [--quick] [--out /work/exp/gluster_probe.md]

Sections: locks, release, partition, stale, races, xattr, rates, throughput, misc, enospc, wbpair.
Prints a markdown table (and saves it); the run time of each section is printed too.
"""

import argparse
import ctypes
import errno
import fcntl
import multiprocessing as mp
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gluster_cluster as gcl  # noqa: E402

ROWS = []           # (section, property, config, result)
LIBC = ctypes.CDLL(None, use_errno=True)


def row(section, prop, config, result):
    ROWS.append((section, prop, config, str(result)))
    print(f"  {prop} [{config}]: {result}", flush=True)


def errname(e):
    return errno.errorcode.get(e, str(e))


# ---------------------------------------------------------------- locks
KINDS = ("flock", "posix", "ofd")


def _flock_struct(ltype):
    # struct flock on x86_64: short l_type, short l_whence, off_t l_start, off_t l_len,
    # pid_t l_pid (+ padding). l_pid must be 0 for OFD locks.
    return struct.pack("hhqqixxxx", ltype, os.SEEK_SET, 0, 0, 0)


def lock_fd(fd, kind):
    """Non-blocking exclusive lock of the whole file; True if taken, False if held elsewhere."""
    try:
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif kind == "posix":
            fcntl.fcntl(fd, fcntl.F_SETLK, _flock_struct(fcntl.F_WRLCK))
        elif kind == "ofd":
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_struct(fcntl.F_WRLCK))
        else:
            raise ValueError(kind)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def try_lock(path, kind):
    """Open path, try the lock, close again (so releases it). True if it was free."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return lock_fd(fd, kind)
    finally:
        os.close(fd)


def wait_acquire(path, kind, timeout, interval=0.002):
    """Poll for the lock on one fd; seconds until taken (lock then dropped), or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            try:
                if lock_fd(fd, kind):
                    return time.monotonic() - t0
            except OSError:
                pass        # ENOTCONN etc. while a client reconnects: keep polling
            time.sleep(interval)
        return None
    finally:
        os.close(fd)


def _blocking_child(path, kind, w):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLKW if kind == "posix" else fcntl.F_OFD_SETLKW,
                    _flock_struct(fcntl.F_WRLCK))
    os.write(w, b"1")
    time.sleep(3600)


def wait_acquire_blocking(path, kind, timeout):
    """Like wait_acquire, but the waiter blocks in F_SETLKW/flock (a queued request on
    the brick, which is what lock revocation reacts to). Seconds, or None."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _blocking_child(path, kind, w)
        finally:
            os._exit(0)
    os.close(w)
    t0 = time.monotonic()
    import select
    ready, _, _ = select.select([r], [], [], timeout)
    got = time.monotonic() - t0 if ready and os.read(r, 1) == b"1" else None
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return got


class Holder:
    """A separate process that takes a lock on path and keeps it until told or killed;
    `check()` asks it what it now sees on its fd (a write and a re-lock)."""

    def __init__(self, path, kind):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_hold", kind, path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if line != "LOCKED":
            raise RuntimeError(f"holder could not lock {path}: {line!r}")

    def check(self, timeout=10):
        try:
            self.p.stdin.write("check\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            return "holder gone"
        out = []
        t = threading.Thread(target=lambda: out.append(self.p.stdout.readline().strip()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else f"holder hangs (>{timeout}s)"

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass    # stuck in D state on a dead mount; reaped once the mount goes

    def stop(self):
        self.kill()


def _hold_main(kind, path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not lock_fd(fd, kind):
        print("BUSY", flush=True)
        return
    print("LOCKED", flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            res = []
            try:
                os.pwrite(fd, b"x", 0)
                res.append("write ok")
            except OSError as e:
                res.append(f"write {errname(e.errno)}")
            try:   # re-locking a lock one holds succeeds; after a silent loss too
                res.append("relock ok" if lock_fd(fd, kind) else "relock: held by other")
            except OSError as e:
                res.append(f"relock {errname(e.errno)}")
            print(", ".join(res), flush=True)


def section_locks(gc):
    a, b = gc.clients[0].mount, gc.clients[1].mount
    cfg = "strict"
    for hk in KINDS:
        res = []
        for wk in KINDS:
            f = f"lk-{hk}-{wk}"
            h = Holder(f"{a}/{f}", hk)
            other = not try_lock(f"{b}/{f}", wk)
            same = not try_lock(f"{a}/{f}", wk)
            h.stop()
            freed = try_lock(f"{b}/{f}", wk)
            res.append(f"{wk}: {'conflict' if other else 'FREE'} on B / {'conflict' if same else 'free'} on A"
                       + ("" if freed else ", NOT freed after holder exit"))
        row("locks", f"{hk} held on A (other process), try on B / on A", cfg, "; ".join(res))
    # Local baseline: flock and fcntl locks are independent on a local fs.
    local = "/tmp/tpg-local-lock"
    h = Holder(local, "flock")
    row("locks", "local ext4: flock held, posix try", "local", "conflict" if not try_lock(local, "posix") else "free (independent)")
    h.stop()
    os.unlink(local)


# ---------------------------------------------------------------- lock release
def _release_case(gc, name, kind, action, observe=12.0, cfg=""):
    """Holder on A takes the lock; `action` disturbs it; the waiter on B polls.
    Returns a short result string."""
    a, b = gc.clients[0].mount, gc.clients[1].mount
    f = f"rel-{name}-{kind}"
    h = Holder(f"{a}/{f}", kind)
    assert not try_lock(f"{b}/{f}", kind)
    t0 = time.monotonic()
    after = action(h)           # returns a function run after the waiter's result, or None
    got = wait_acquire(f"{b}/{f}", kind, observe)
    msg = f"B got lock after {got * 1000:.0f} ms" if got is not None else f"still held after {observe:.0f} s"
    if after:
        msg += "; " + after(got, t0)
    h.kill()
    return msg


def section_release(gc, cfg, quick):
    kinds = ("posix", "flock")
    for kind in kinds:
        # 1. holder process kill -9
        times = []
        for _ in range(3):
            got = _release_case(gc, "kill", kind, lambda h: (h.p.kill(), None)[1], 10)
            times.append(got)
        row("release", f"{kind}: holder process kill -9 (3 runs)", cfg, " | ".join(times))

        # 2. the holder's glusterfs client kill -9
        def kill_client(h):
            gc.kill_client(0)
            return lambda got, t0: f"holder then sees: {h.check()}"
        row("release", f"{kind}: A's glusterfs client kill -9", cfg, _release_case(gc, "ckill", kind, kill_client, 10))
        gc.remount(0)

    # 3. A's client frozen (SIGSTOP) for S seconds, waiter polls during and after.
    for secs in ((10,) if quick else (10, 50)):
        kind = "posix"

        def freeze(h, secs=secs):
            gc.freeze_client(0)
            t = threading.Timer(secs, gc.thaw_client, args=(0,))
            t.start()
            return lambda got, t0: (f"thawed at {secs} s; holder then sees: {h.check()}")
        r = _release_case(gc, f"freeze{secs}", kind, freeze, secs + 15)
        row("release", f"{kind}: A's client SIGSTOP {secs} s (waiter polls {secs + 15} s)", cfg, r)
        gc.remount(0)


def section_blocking(gc, cfg, window=20):
    """A blocking waiter on B against a live holder on A, and against a frozen one."""
    a, b = gc.clients[0].mount, gc.clients[1].mount
    for frozen in (False, True):
        f = f"blk-{frozen}"
        h = Holder(f"{a}/{f}", "posix")
        if frozen:
            gc.freeze_client(0)
        got = wait_acquire_blocking(f"{b}/{f}", "posix", window)
        if frozen:
            gc.thaw_client(0)
        seen = h.check()
        h.kill()
        row("release", f"posix: blocking F_SETLKW on B, holder on A {'frozen (SIGSTOP)' if frozen else 'alive, holding'}",
            cfg, (f"B got lock after {got:.1f} s" if got is not None else f"still held after {window} s")
            + f"; holder then sees: {seen}")
        if frozen:
            gc.remount(0)


def section_partition(gc, cfg, quick):
    """netns only: cut A's network while its holder and client live on."""
    for how in (("drop",) if quick else ("drop", "link")):
        kind = "posix"
        window = 75

        def cut(h, how=how):
            gc.cut_network(0, how)

            def after(got, t0):
                msg = f"holder sees (net still cut): {h.check(5)}"
                gc.restore_network(0)
                ok = _poll_until(lambda: os.path.exists(f"{gc.clients[0].mount}/."), 30, 0.2)
                time.sleep(2)
                msg += f"; net restored: holder sees {h.check(10)}"
                return msg
            return after
        r = _release_case(gc, f"cut-{how}", kind, cut, window)
        gc.restore_network(0)
        row("partition", f"{kind}: A's network cut ({how}), waiter polls {window} s", cfg, r)
        gc.remount(0)


# ---------------------------------------------------------------- staleness
def _write(path, data, fsync=True):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    if fsync:
        os.fsync(fd)
    os.close(fd)


def _read(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b""
        while True:
            c = os.read(fd, 1 << 20)
            if not c:
                return out
            out += c
    finally:
        os.close(fd)


def _poll_until(pred, timeout=5.0, interval=0.001):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def section_stale(gc, cfg, n=100, loop_secs=10):
    a, b = gc.clients[0].mount, gc.clients[1].mount
    # rename over: B has read the old file (so any cache holds it)
    stale = 0
    for i in range(n):
        _write(f"{a}/rn", b"old%d" % i)
        _read(f"{b}/rn")
        _write(f"{a}/rn.tmp", b"new%d" % i)
        os.rename(f"{a}/rn.tmp", f"{a}/rn")
        try:
            stale += _read(f"{b}/rn") != b"new%d" % i
        except OSError:
            stale += 1
    row("stale", "rename over on A, open+read on B: stale", cfg, f"{stale}/{n}")

    # in-place overwrite, same size, fsync+close on A
    for fs, label in ((True, "fsync+close"), (False, "close, no fsync")):
        stale = 0
        for i in range(n):
            _write(f"{a}/ip", b"A%07d" % i)
            _read(f"{b}/ip")
            fd = os.open(f"{a}/ip", os.O_WRONLY)
            os.pwrite(fd, b"B%07d" % i, 0)
            if fs:
                os.fsync(fd)
            os.close(fd)
            stale += _read(f"{b}/ip") != b"B%07d" % i
        row("stale", f"in-place overwrite on A ({label}), open+read on B: stale", cfg, f"{stale}/{n}")

    # new file written and closed (no fsync) on A, read at once on B: close-to-open
    bad = 0
    data = os.urandom(256 << 10)
    for i in range(n // 2):
        _write(f"{a}/cto{i}", data, fsync=False)
        try:
            bad += _read(f"{b}/cto{i}") != data
        except OSError:
            bad += 1
        os.unlink(f"{a}/cto{i}")
    row("stale", "256 KiB write+close (no fsync) on A, read on B: wrong/short", cfg, f"{bad}/{n // 2}")

    # unlink and size change: delay until B's stat shows it
    dl_unlink, dl_size, never = [], [], 0
    for i in range(20):
        _write(f"{a}/ul", b"x")
        os.stat(f"{b}/ul")
        os.unlink(f"{a}/ul")

        def gone():
            try:
                os.stat(f"{b}/ul")
                return False
            except FileNotFoundError:
                return True
        d = _poll_until(gone)
        dl_unlink.append(d) if d is not None else None
        never += d is None
        _write(f"{a}/sz", b"x")
        os.stat(f"{b}/sz")
        with open(f"{a}/sz", "ab") as f:
            f.write(b"y" * 1000)
        d = _poll_until(lambda: os.stat(f"{b}/sz").st_size == 1001)
        dl_size.append(d) if d is not None else None
        never += d is None
    fmt = lambda v: f"max {max(v) * 1000:.1f} ms, median {statistics.median(v) * 1000:.1f} ms" if v else "-"
    row("stale", "unlink on A -> ENOENT on B (20 runs)", cfg, fmt(dl_unlink))
    row("stale", "append on A -> new size on B (20 runs)", cfg, fmt(dl_size) + (f", {never} never within 5 s" if never else ""))

    # open on B while A renames new files over the target in a loop
    _write(f"{a}/hot", b"v0")
    stop = threading.Event()
    renames = [0]

    def renamer():
        i = 0
        while not stop.is_set():
            _write(f"{a}/hot.tmp", b"v%d" % i, fsync=False)
            os.rename(f"{a}/hot.tmp", f"{a}/hot")
            i += 1
        renames[0] = i
    t = threading.Thread(target=renamer)
    t.start()
    counts = {}
    opens = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < loop_secs:
        opens += 1
        try:
            _read(f"{b}/hot")
            k = "ok"
        except OSError as e:
            k = errname(e.errno)
        counts[k] = counts.get(k, 0) + 1
    stop.set()
    t.join()
    errs = {k: v for k, v in counts.items() if k != "ok"}
    per = ", ".join(f"{k} {v} (1 in {opens // v})" for k, v in errs.items()) or "none"
    row("stale", f"open+read on B during renames on A ({loop_secs} s): errors per opens", cfg,
        f"{opens} opens, {renames[0]} renames: {per}")


# ---------------------------------------------------------------- races
def _race_worker(kind, mount, n, barrier, q, ident):
    wins = []
    for i in range(n):
        barrier.wait()
        target = f"{mount}/race-{kind}/t{i}"
        try:
            if kind == "excl":
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, ident.encode())
                os.close(fd)
            else:
                src = f"{mount}/race-{kind}/src{ident}-{i}"
                _write(src, ident.encode(), fsync=False)
                if kind == "noreplace":
                    if renameat2(src, target, RENAME_NOREPLACE) != 0:
                        raise OSError(ctypes.get_errno(), "renameat2")
                else:
                    os.link(src, target)
            wins.append(i)
        except OSError as e:
            if e.errno != errno.EEXIST:
                q.put(("err", ident, i, errname(e.errno)))
    q.put(("wins", ident, wins))


AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(src, dst, flags):
    return LIBC.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags)


def race(gc, kind, n):
    """n races between a process on A and one on B for one name each; returns
    (races with exactly one winner, with two, with none, errors, content mismatches)."""
    mounts = [c.mount for c in gc.clients[:2]]
    os.makedirs(f"{mounts[0]}/race-{kind}", exist_ok=True)
    ctx = mp.get_context("fork")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(kind, m, n, barrier, q, "AB"[k])) for k, m in enumerate(mounts)]
    for p in procs:
        p.start()
    wins, errs = {}, []
    done = 0
    while done < 2:
        m = q.get()
        if m[0] == "wins":
            wins[m[1]] = set(m[2])
            done += 1
        else:
            errs.append(m[1:])
    for p in procs:
        p.join()
    one = sum(1 for i in range(n) if (i in wins["A"]) != (i in wins["B"]))
    both = sum(1 for i in range(n) if i in wins["A"] and i in wins["B"])
    none = n - one - both
    mismatch = 0
    for i in range(n):   # the content both sides see must be the winner's
        w = "A" if i in wins["A"] else "B"
        for m in mounts:
            try:
                if _read(f"{m}/race-{kind}/t{i}").decode() != w:
                    mismatch += 1
            except OSError:
                mismatch += 1
    return one, both, none, errs, mismatch


def section_races(gc, cfg, n):
    a, b = gc.clients[0].mount, gc.clients[1].mount
    for kind, label in (("excl", "O_CREAT|O_EXCL"), ("noreplace", "renameat2(RENAME_NOREPLACE)"), ("link", "link()")):
        t0 = time.monotonic()
        one, both, none, errs, mismatch = race(gc, kind, n)
        e = f", errors {errs[:3]}{'...' if len(errs) > 3 else ''} ({len(errs)})" if errs else ""
        row("races", f"{label} race A vs B, {n} races", cfg,
            f"one winner {one}, two winners {both}, none {none}, content mismatch {mismatch}{e} "
            f"({time.monotonic() - t0:.1f} s)")
    # renameat2 semantics on one client
    _write(f"{a}/nr1", b"1")
    _write(f"{a}/nr2", b"2")
    r = renameat2(f"{a}/nr1", f"{a}/nr2", RENAME_NOREPLACE)
    e1 = errname(ctypes.get_errno()) if r else "ok"
    r2 = renameat2(f"{a}/nr1", f"{a}/nr-new", RENAME_NOREPLACE)
    e2 = errname(ctypes.get_errno()) if r2 else "ok"
    _write(f"{b}/nr3", b"3")      # a name this client (A) has never looked up
    r3 = renameat2(f"{a}/nr1", f"{a}/nr3", RENAME_NOREPLACE)
    e3 = errname(ctypes.get_errno()) if r3 else "ok"
    row("races", "renameat2(NOREPLACE) on A onto: a name A knows exists / a free name / a name only B created", cfg,
        f"{e1} / {e2} / {e3}; targets now '{_read(f'{b}/nr2').decode()}' / "
        f"{os.path.exists(f'{b}/nr-new')} / '{_read(f'{b}/nr3').decode()}'")
    # link counts on the other client
    _write(f"{a}/ln1", b"x")
    os.link(f"{a}/ln1", f"{a}/ln2")
    n_after_link = os.stat(f"{b}/ln1").st_nlink
    os.unlink(f"{a}/ln2")
    d = _poll_until(lambda: os.stat(f"{b}/ln1").st_nlink == 1, 5)
    row("races", "st_nlink on B: after link on A / delay until 1 after unlink", cfg,
        f"{n_after_link} / {'never (5 s)' if d is None else f'{d * 1000:.1f} ms'}")
    # directory rename
    os.makedirs(f"{a}/d1/sub", exist_ok=True)
    _write(f"{a}/d1/sub/f", b"in-dir")
    os.listdir(f"{b}/d1")
    os.rename(f"{a}/d1", f"{a}/d2")
    try:
        seen = _read(f"{b}/d2/sub/f").decode()
    except OSError as e:
        seen = errname(e.errno)
    old = os.path.exists(f"{b}/d1")
    os.makedirs(f"{a}/d3")
    os.makedirs(f"{b}/d4/x")
    try:
        os.rename(f"{b}/d2", f"{b}/d3")
        over_empty = "replaces empty dir" if not os.path.exists(f"{a}/d2") and os.path.exists(f"{a}/d3/sub/f") else "?"
    except OSError as e:
        over_empty = errname(e.errno)
    try:
        os.rename(f"{a}/d3", f"{a}/d4")
        over_full = "REPLACED non-empty dir"
    except OSError as e:
        over_full = errname(e.errno)
    row("races", "rename dir on A: B reads new path / old path gone / onto empty dir / onto non-empty", cfg,
        f"'{seen}' / {'still there' if old else 'gone'} / {over_empty} / {over_full}")


# ---------------------------------------------------------------- xattrs
def _max_xattr(path):
    lo, hi = 0, 1 << 17
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            os.setxattr(path, "user.tpg", b"v" * mid)
            lo = mid
        except OSError:
            hi = mid - 1
    try:
        os.setxattr(path, "user.tpg", b"v" * (lo + 1))
        err = "none"
    except OSError as e:
        err = errname(e.errno)
    return lo, err


def section_xattr(gc, cfg):
    a, b = gc.clients[0].mount, gc.clients[1].mount
    _write(f"{a}/xa", b"x")
    m, err = _max_xattr(f"{a}/xa")
    seen = len(os.getxattr(f"{b}/xa", "user.tpg"))
    _write("/tmp/tpg-xattr-local", b"x")
    lm, lerr = _max_xattr("/tmp/tpg-xattr-local")
    os.unlink("/tmp/tpg-xattr-local")
    fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", gc.base], capture_output=True, text=True).stdout.strip()
    row("xattr", f"max user.* value via mount (brick fs {fstype})", cfg,
        f"{m} B (one more: {err}); B reads {seen} B; same fs locally: {lm} B ({lerr})")


# ---------------------------------------------------------------- rates
def _rate(fn, secs=2.0):
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < secs:
        fn(n)
        n += 1
    return n / (time.monotonic() - t0)


def _rates(d):
    os.makedirs(d, exist_ok=True)
    _write(f"{d}/s", b"x")
    out = {"stat/s": _rate(lambda i: os.stat(f"{d}/s"))}

    def commit(i):
        _write(f"{d}/c.tmp", b"y" * 4096)
        os.rename(f"{d}/c.tmp", f"{d}/c{i % 50}")
    out["create+write 4K+fsync+rename/s"] = _rate(commit)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out["fsync(dir)/s"] = _rate(lambda i: os.fsync(dfd))
    except OSError as e:
        out["fsync(dir)/s"] = errname(e.errno)
    os.close(dfd)
    os.makedirs(f"{d}/many", exist_ok=True)
    for i in range(1000):
        os.close(os.open(f"{d}/many/f{i:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
    ts = []
    for _ in range(5):
        t0 = time.monotonic()
        assert len(os.listdir(f"{d}/many")) == 1000
        ts.append(time.monotonic() - t0)
    out["readdir 1000 names (ms)"] = statistics.median(ts) * 1000
    ts = []
    for _ in range(3):
        t0 = time.monotonic()
        for e in os.scandir(f"{d}/many"):
            e.stat()
        ts.append(time.monotonic() - t0)
    out["readdir+stat 1000 (ms)"] = statistics.median(ts) * 1000
    return out


def section_rates(gc, cfg):
    g = _rates(f"{gc.clients[0].mount}/rates")
    loc = _rates(f"{gc.base}/local-rates")
    for k in g:
        f = lambda v: f"{v:.0f}" if isinstance(v, float) else v
        row("rates", k, cfg, f"gluster {f(g[k])}, local disk {f(loc[k])}")


def _drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def _dd(args):
    p = subprocess.run(["dd", *args, "status=none"], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr)


def section_throughput(gc, cfg, mib=1024, reps=3):
    res = {"gluster": {"w": [], "r": []}, "local": {"w": [], "r": []}}
    paths = {"gluster": f"{gc.clients[0].mount}/big", "local": f"{gc.base}/local-big"}
    for _ in range(reps):
        for where in ("gluster", "local"):     # alternating: the machine's load hits both
            p = paths[where]
            t0 = time.monotonic()
            _dd(["if=/dev/zero", f"of={p}", "bs=1M", f"count={mib}", "conv=fsync"])
            res[where]["w"].append(mib / (time.monotonic() - t0))
            _drop_caches()
            t0 = time.monotonic()
            _dd([f"if={p}", "of=/dev/null", "bs=1M"])
            res[where]["r"].append(mib / (time.monotonic() - t0))
            os.unlink(p)
    for where in res:
        w, r = res[where]["w"], res[where]["r"]
        row("throughput", f"{where}: {mib} MiB dd bs=1M conv=fsync write / cold read, MiB/s (median of {reps}; all)",
            cfg, f"{statistics.median(w):.0f} / {statistics.median(r):.0f} "
                 f"(w {', '.join(f'{x:.0f}' for x in w)}; r {', '.join(f'{x:.0f}' for x in r)})")


def section_wb_pair(gc, mib=1024, reps=3):
    """write-behind on vs off on one cluster, toggled live and alternated."""
    res = {"on": [], "off": []}
    p = f"{gc.clients[0].mount}/big"
    for _ in range(reps):
        for wb in ("on", "off"):
            gc.set_option("performance.write-behind", wb)
            time.sleep(2)     # the clients switch to the new graph
            t0 = time.monotonic()
            _dd(["if=/dev/zero", f"of={p}", "bs=1M", f"count={mib}", "conv=fsync"])
            res[wb].append(mib / (time.monotonic() - t0))
            os.unlink(p)
    row("throughput", f"{mib} MiB dd conv=fsync write, write-behind on vs off (alternating, median of {reps}), MiB/s",
        "strict", " vs ".join(f"{statistics.median(v):.0f} ({', '.join(f'{x:.0f}' for x in v)})" for v in res.values()))


# ---------------------------------------------------------------- misc
def section_misc(gc, cfg):
    a = gc.clients[0].mount
    sv, sb = os.statvfs(a), os.statvfs(gc.base)
    row("misc", "statfs of mount vs brick fs: bsize, blocks, bavail, files", cfg,
        f"mount {sv.f_bsize}, {sv.f_blocks}, {sv.f_bavail}, {sv.f_files}; brick fs {sb.f_bsize}, "
        f"{sb.f_blocks}, {sb.f_bavail}, {sb.f_files} (bytes avail: {sv.f_bavail * sv.f_frsize >> 20} vs "
        f"{sb.f_bavail * sb.f_frsize >> 20} MiB)")
    p = f"{a}/misc"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    out = []
    try:
        os.posix_fallocate(fd, 0, 8 << 20)
        st = os.fstat(fd)
        out.append(f"posix_fallocate 8 MiB: size {st.st_size}, blocks {st.st_blocks * 512 >> 20} MiB")
    except OSError as e:
        out.append(f"posix_fallocate {errname(e.errno)}")
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    for mode, name in ((FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"), (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, "PUNCH_HOLE")):
        r = LIBC.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(1 << 20))
        out.append(f"fallocate({name}) {'ok' if r == 0 else errname(ctypes.get_errno())}")
    os.pwrite(fd, b"z" * 65536, 0)
    SYNC_FILE_RANGE_WRITE = 2
    r = LIBC.sync_file_range(fd, ctypes.c_long(0), ctypes.c_long(65536), SYNC_FILE_RANGE_WRITE)
    out.append(f"sync_file_range {'ok' if r == 0 else errname(ctypes.get_errno())}")
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        out.append("posix_fadvise ok")
    except OSError as e:
        out.append(f"posix_fadvise {errname(e.errno)}")
    os.close(fd)
    try:
        import mmap
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(b"d" * (1 << 20))
        dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
        n = os.pwritev(dfd, [buf], 0)
        os.preadv(dfd, [buf], 0)
        os.close(dfd)
        out.append(f"O_DIRECT open+1 MiB aligned write/read ok ({n})")
        try:
            dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
            os.pwrite(dfd, b"u" * 100, 1)
            os.close(dfd)
            out.append("O_DIRECT unaligned write accepted")
        except OSError as e:
            out.append(f"O_DIRECT unaligned {errname(e.errno)}")
    except OSError as e:
        out.append(f"O_DIRECT {errname(e.errno)}")
    # ioprio: set idle class for this process (what a maintenance thread would do);
    # it only steers the local block layer, so on a FUSE mount it reaches no brick.
    IOPRIO_WHO_PROCESS, IOPRIO_CLASS_IDLE = 1, 3
    r = LIBC.syscall(251, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13)   # ioprio_set
    out.append(f"ioprio_set(idle) {'ok' if r == 0 else errname(ctypes.get_errno())}")
    LIBC.syscall(251, IOPRIO_WHO_PROCESS, 0, (2 << 13) | 4)                 # back to best-effort
    os.unlink(p)
    row("misc", "fallocate, sync_file_range, fadvise, O_DIRECT, ioprio on the mount", cfg, "; ".join(out))


# ---------------------------------------------------------------- ENOSPC
def _fill(path, mib, do_fsync):
    """Write mib MiB in 1 MiB writes; where does ENOSPC show: write i, fsync, close?"""
    out = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = b"\xa5" * (1 << 20)
    for i in range(mib):
        try:
            os.write(fd, chunk)
        except OSError as e:
            out.append(f"write #{i} {errname(e.errno)}")
            break
    else:
        out.append(f"all {mib} writes ok")
    if do_fsync:
        try:
            os.fsync(fd)
            out.append("fsync ok")
        except OSError as e:
            out.append(f"fsync {errname(e.errno)}")
    try:
        os.close(fd)
        out.append("close ok")
    except OSError as e:
        out.append(f"close {errname(e.errno)}")
    return ", ".join(out)


def section_enospc(gc, cfg, brick_mib):
    a, b = gc.clients[0].mount, gc.clients[1].mount
    res = []
    for do_fsync in (False, True):
        res.append(("write+fsync+close: " if do_fsync else "write+close: ") + _fill(f"{a}/fill", brick_mib + 32, do_fsync))
        size = os.stat(f"{b}/fill").st_size >> 20
        free_full = os.statvfs(b).f_bavail * os.statvfs(b).f_frsize >> 20
        os.unlink(f"{a}/fill")
        d = _poll_until(lambda: os.statvfs(b).f_bavail * os.statvfs(b).f_frsize >> 20 > brick_mib * 3 // 4, 10, 0.01)
        res[-1] += (f" (B sees {size} MiB, {free_full} MiB free; after unlink on A, B's statfs shows the space free "
                    + (f"after {d * 1000:.0f} ms)" if d is not None else "not within 10 s)"))
    row("enospc", f"{brick_mib + 32} MiB into a {brick_mib} MiB brick: where ENOSPC shows", cfg, "; ".join(res))
    # The error in the last, small write before close: is close the only place to see it?
    filler = _fill(f"{a}/filler", brick_mib - 1, True)
    tail = _fill(f"{a}/tail", 2, False)
    row("enospc", f"{brick_mib - 1} MiB filler, then a 2 MiB file (2 writes + close, no fsync)", cfg,
        f"filler: {filler}; file: {tail}; B sees {os.stat(f'{b}/tail').st_size >> 10} KiB")
    os.unlink(f"{a}/filler")
    os.unlink(f"{a}/tail")


# ---------------------------------------------------------------- main
def write_table(path, meta):
    lines = ["# GlusterFS probe results", "", meta, "",
             "| section | property | config | result |", "|---|---|---|---|"]
    for s, p, c, r in ROWS:
        cell = lambda x: x.replace("|", "\\|")      # a | inside a cell would split it
        lines.append(f"| {cell(s)} | {cell(p)} | {cell(c)} | {cell(r)} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="locks,release,partition,stale,races,xattr,rates,throughput,misc,enospc,wbpair")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, shorter freezes")
    ap.add_argument("--races", type=int, default=1000)
    ap.add_argument("--loop-secs", type=int, default=10, help="length of the open-during-renames loop")
    ap.add_argument("--configs", default="default,strict3,strict,strict2", help="configs of the stale section")
    ap.add_argument("--out", default="/work/exp/gluster_probe.md")
    a = ap.parse_args()
    only = set(a.only.split(","))
    reason = gcl.skip_reason(netns="partition" in only)
    if reason:
        print("SKIP:", reason)
        return 77
    t_all = time.monotonic()
    timings = []

    def timed(name, fn):
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        fn()
        timings.append(f"{name} {time.monotonic() - t0:.0f} s")
        print(f"== {name}: {time.monotonic() - t0:.1f} s", flush=True)

    def cluster(**kw):
        gc = gcl.GlusterCluster(**kw)
        gc.up()
        timings.append(f"up {gc.timings['up']:.1f} s")
        return gc

    def with_cluster(kw, fn):
        gc = cluster(**kw)
        try:
            fn(gc)
        finally:
            gc.down()
            timings.append(f"down {gc.timings['down']:.1f} s")

    minimal = {"performance.stat-prefetch": "off", "performance.quick-read": "off", "performance.open-behind": "off"}
    configs = [("default", dict(strict=False)),
               ("strict3", dict(strict=False, volume_options=minimal, client_options=gcl.STRICT_CLIENT_OPTIONS)),
               ("strict", dict(strict=True))]
    if "stale" in only:
        configs.append(("strict2", dict(strict=True, bricks=2)))
        configs.append(("default2", dict(strict=False, bricks=2)))
        for name, kw in configs:
            if name not in a.configs.split(","):
                continue
            label = {"strict2": "strict, 2 bricks", "default2": "default, 2 bricks"}.get(name, name)
            with_cluster(kw, lambda gc, label=label: timed(f"stale {label}", lambda: section_stale(
                gc, label, loop_secs=a.loop_secs)))
    if only & {"locks", "release", "races", "xattr", "rates", "throughput", "misc"}:
        def body(gc):
            if "locks" in only:
                timed("locks", lambda: section_locks(gc))
            if "races" in only:
                timed("races", lambda: section_races(gc, "strict", a.races))
            if "xattr" in only:
                timed("xattr", lambda: section_xattr(gc, "strict"))
            if "misc" in only:
                timed("misc", lambda: section_misc(gc, "strict"))
            if "rates" in only:
                timed("rates", lambda: section_rates(gc, "strict"))
            if "throughput" in only:
                timed("throughput", lambda: section_throughput(gc, "strict", reps=2 if a.quick else 3))
            if "release" in only:
                timed("release", lambda: section_release(gc, "strict, ping-timeout 42", a.quick))
                timed("blocking", lambda: section_blocking(gc, "strict"))
        with_cluster(dict(strict=True), body)
        if "races" in only:
            with_cluster(dict(strict=True, bricks=2), lambda gc: timed(
                "races 2 bricks", lambda: section_races(gc, "strict, 2 bricks", a.races // 2)))
        if "rates" in only:
            with_cluster(dict(strict=False), lambda gc: timed("rates default", lambda: section_rates(gc, "default")))
        if "throughput" in only:   # what write-behind buys for streaming writes
            with_cluster(dict(strict=True, volume_options={"performance.write-behind": "on"}),
                         lambda gc: timed("throughput wb", lambda: section_throughput(
                             gc, "strict, write-behind on", reps=2 if a.quick else 3)))
    if "wbpair" in only:
        with_cluster(dict(strict=True), lambda gc: timed("wbpair", lambda: section_wb_pair(gc, reps=2 if a.quick else 3)))
    if "enospc" in only:
        wb = {"performance.write-behind": "on", "performance.flush-behind": "on"}
        for label, kw in (("default", dict(strict=False)),
                          ("strict3", dict(strict=False, volume_options=minimal, client_options=gcl.STRICT_CLIENT_OPTIONS)),
                          ("strict, write-behind on, flush-behind off", dict(strict=True, volume_options={"performance.write-behind": "on"})),
                          ("strict (write-behind off)", dict(strict=True))):
            with_cluster(dict(kw, brick_mib=64), lambda gc, label=label: timed(
                f"enospc {label}", lambda: section_enospc(gc, label, 64)))
    if "release" in only and not a.quick:
        with_cluster(dict(strict=True, volume_options={"network.ping-timeout": "5"}),
                     lambda gc: timed("release pt5", lambda: section_release(gc, "strict, ping-timeout 5", a.quick)))
    if "release" in only:
        # The brick's lock revocation: a lock held longer than N s is taken away when
        # another client waits for it (what a frozen holder needs; and a live one suffers).
        def revocation(gc):
            section_release(gc, "strict, locks-revocation-secs 5", True)
            section_blocking(gc, "strict, locks-revocation-secs 5")
        with_cluster(dict(strict=True, volume_options={"features.locks-revocation-secs": "5"}),
                     lambda gc: timed("release revocation5", lambda: revocation(gc)))
    if "partition" in only:
        fast_server = {"network.ping-timeout": "5", "server.tcp-user-timeout": "5",
                       "server.keepalive-time": "2", "server.keepalive-interval": "1",
                       "server.keepalive-count": "3"}
        for label, opts, q in (("ping-timeout 42", {"network.ping-timeout": "42"}, a.quick),
                               ("ping-timeout 5", {"network.ping-timeout": "5"}, a.quick),
                               ("ping-timeout 5, server tcp-user-timeout 5, keepalive 2+1x3", fast_server, True),
                               # fds that held locks are then not reopened after a reconnect
                               ("ping-timeout 5, server tcp-user-timeout 5, client.strict-locks on",
                                dict(fast_server, **{"client.strict-locks": "on"}), True)):
            with_cluster(dict(strict=True, netns=True, volume_options=opts),
                         lambda gc, label=label, q=q: timed(f"partition {label}", lambda: section_partition(
                             gc, f"strict, netns, {label}", q)))
    total = time.monotonic() - t_all
    meta = (f"GlusterFS {subprocess.run(['glusterfs', '--version'], capture_output=True, text=True).stdout.split()[1]}, "
            f"{os.uname().release}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; total {total:.0f} s "
            f"({'; '.join(timings)})")
    write_table(a.out, meta)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_hold":
        _hold_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())

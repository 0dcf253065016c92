#!/usr/bin/python3
"""Shared helpers of the real-mount tests (tests/mount/*): mounting tpdefs for a test,
skip detection and pass/fail accounting.

    with mounted(TPDEFS_BIN) as m:      # m.mnt, m.store, m.proc, m.log
        ...
    m.returncode                        # the daemon's exit status, after the block

Teardown always unmounts, even when the body raised: `fusermount3 -u` (retried while the
mount is busy), then `fusermount3 -uz`, then SIGTERM/SIGKILL of the daemon (killing the
daemon aborts the FUSE connection, so nothing stays blocked). Safety nets for the
unusual exits: an atexit handler, SIGTERM/SIGHUP turned into SystemExit (so `with`
blocks unwind), and PR_SET_PDEATHSIG on the daemon (it gets SIGTERM, which makes it
unmount, if the test process dies without cleaning up). Mount state is read from
/proc/self/mountinfo, never by stat() of the mount point, so a hung daemon cannot hang
the teardown.

Results: a suite counts checks with Results(name).check(...), then Results.finish()
writes "<passed> <failed> <skipped>" into RESULTS_DIR/<name>.count (the convention of
scripts/test_summary.py) and exits 0, or 1 on any failure; Results.skip(reason) writes
"0 0 1" and exits 77.

Command line (a launcher for shell suites such as fio_test.sh):
    mount_util.py run [--daemon-rc FILE] [--base DIR] [--timeout S] TPDEFS_BIN [DAEMON_ARG...] -- CMD [ARG...]
mounts, runs CMD with TPDEFS_MNT / TPDEFS_STORE / TPDEFS_LOG set, unmounts and exits with
CMD's status (125 if the mount could not be set up). --daemon-rc writes the daemon's exit
status into FILE; --timeout kills the daemon after S seconds (hung requests then fail).
"""
import atexit
import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

MOUNT_TIMEOUT = 20.0

_active = {}                 # id -> Mount still mounted by this process
_owner_pid = os.getpid()
_nets_installed = False


def sha_file(path, chunk=1 << 20):
    """(sha256 hex digest, size) of a file read in `chunk`-byte reads."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest(), n
            h.update(b)
            n += len(b)


def skip_reason():
    """A reason to skip the real-mount tests on this machine, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    if os.geteuid() != 0:
        return "not running as root"
    return None


def require_mount(res, tpdefs):
    """Ends `res` unless real mounts of `tpdefs` can run here: a skip without FUSE or root,
    a failure without the binary."""
    why = skip_reason()
    if why:
        res.skip(why)
    if not os.access(tpdefs, os.X_OK):
        res.check("tpdefs_binary_exists", False, f"{tpdefs} is not an executable")
        res.finish()


def _unescape(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mount_fstype(path):
    """fstype of the topmost mount at exactly `path` (already absolute), or None."""
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) >= 5 and _unescape(fields[4]) == path:
                    found = right.split()[0] if right else "?"
    except OSError:
        pass
    return found


def is_mounted(path):
    return _mount_fstype(path) is not None


def set_pdeathsig():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _fusermount(args, mnt, timeout=15):
    try:
        r = subprocess.run(["fusermount3", *args, mnt], capture_output=True, text=True,
                           timeout=timeout)
        return r.returncode == 0, r.stderr.strip()
    except subprocess.TimeoutExpired:
        return False, "fusermount3 timed out"
    except OSError as e:
        return False, str(e)


class MountError(RuntimeError):
    pass


class Mount:
    def __init__(self, tpdefs_bin, store, mnt, log, args, created):
        self.tpdefs_bin = tpdefs_bin
        self.store = store
        self.mnt = mnt
        self.log = log
        self.args = args
        self.proc = None
        self.returncode = None
        self.teardown_notes = []    # what the teardown had to do beyond a plain unmount
        self._created = created      # directories this object made and removes
        self._logf = None
        self._lock = threading.Lock()
        self._down = False
        self.final_log = ""
        self.watchdog_fired = False

    def log_text(self, tail=4000):
        try:
            with open(self.log, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-tail:].decode("utf-8", "replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=MOUNT_TIMEOUT):
        self._logf = open(self.log, "ab")
        cmd = [self.tpdefs_bin, self.store, self.mnt, "-f", *self.args]
        self._logf.write(("$ " + " ".join(cmd) + "\n").encode())
        self._logf.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf, preexec_fn=set_pdeathsig)
        _active[id(self)] = self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.mnt):
                self._probe(max(deadline - time.monotonic(), 5.0))
                return
            rc = self.proc.poll()
            if rc is not None:
                raise MountError(f"tpdefs exited with status {rc} before mounting; log:\n"
                                 + self.log_text())
            time.sleep(0.05)
        raise MountError(f"{self.mnt} not mounted after {timeout:.0f} s; log:\n"
                         + self.log_text())

    def _probe(self, timeout):
        """The kernel mount exists; the daemon must also answer (a stat of the root)."""
        result = []

        def stat_root():
            try:
                os.stat(self.mnt)
                result.append(None)
            except OSError as e:
                result.append(e)
        t = threading.Thread(target=stat_root, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.kill()          # aborts the connection: the stat returns
            t.join(5)
            raise MountError(f"{self.mnt} is mounted but the daemon did not answer a stat of "
                             f"the root in {timeout:.0f} s (killed it); log:\n" + self.log_text())
        if result and result[0] is not None:
            raise MountError(f"stat of the mount root failed: {result[0]}; log:\n"
                             + self.log_text())

    def kill(self, sig=signal.SIGKILL):
        """Signals the daemon (SIGKILL aborts the FUSE connection: blocked calls fail)."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except OSError:
                pass

    def unmount(self):
        """Unmounts and waits for the daemon. Idempotent; never raises."""
        with self._lock:
            if self._down:
                return self.returncode
            self._down = True
            try:
                self._unmount()
            finally:
                _active.pop(id(self), None)
                if self._logf:
                    self._logf.close()
            return self.returncode

    def _unmount(self):
        notes = self.teardown_notes
        if is_mounted(self.mnt):
            ok, err = _fusermount(["-u"], self.mnt)
            tries = 0
            while not ok and is_mounted(self.mnt) and tries < 20 and self.alive():
                time.sleep(0.1)      # busy: a straggling close, a child still exiting
                ok, err = _fusermount(["-u"], self.mnt)
                tries += 1
            if not ok and is_mounted(self.mnt):
                notes.append(f"fusermount3 -u failed ({err}); lazy unmount")
                _fusermount(["-uz"], self.mnt)
        if self.proc is not None:
            # After a lazy unmount the connection lives while files stay open: wait less.
            grace = 5 if notes else 20
            try:
                self.returncode = self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                notes.append(f"daemon still running {grace} s after unmount; SIGTERM")
                self.proc.terminate()
                try:
                    self.returncode = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    notes.append("daemon ignored SIGTERM; SIGKILL")
                    self.proc.kill()
                    self.returncode = self.proc.wait()
        if is_mounted(self.mnt):
            notes.append("still mounted after the daemon exited; lazy unmount")
            _fusermount(["-uz"], self.mnt)
        if is_mounted(self.mnt):     # should not happen: say so loudly
            try:
                subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=10)
            except Exception:
                pass
            notes.append("needed umount -l")

    def remove_dirs(self):
        for d in reversed(self._created):
            if is_mounted(d):
                continue             # never delete through a mount
            # Mount point: only rmdir (it should be empty); others: remove the tree, but
            # only if nothing below is mounted.
            below = [p for p in _all_mount_points() if p.startswith(d.rstrip("/") + "/")]
            if below:
                continue
            shutil.rmtree(d, ignore_errors=True)


def _all_mount_points():
    pts = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" - ")[0].split()
                if len(fields) >= 5:
                    pts.append(_unescape(fields[4]))
    except OSError:
        pass
    return pts


def _atexit():
    if os.getpid() != _owner_pid:
        return
    for m in list(_active.values()):
        m.unmount()


def _on_signal(sig, frame):
    if os.getpid() != _owner_pid:
        # A forked child (multiprocessing): die as the signal would make it die.
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return
    raise SystemExit(128 + sig)     # unwinds `with mounted(...)`: teardown runs


def _install_nets():
    global _nets_installed
    if _nets_installed:
        return
    _nets_installed = True
    atexit.register(_atexit)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


@contextlib.contextmanager
def mounted(tpdefs_bin, store_dir=None, opts=(), base=None, mnt_dir=None,
            timeout=MOUNT_TIMEOUT, keep_store=False, watchdog=None):
    """Mounts tpdefs for the body of a `with` block.

    tpdefs_bin: the daemon. store_dir: the backing store (a fresh temp dir if None; an
    existing one is reused, which is how a test remounts a store). opts: extra daemon
    arguments, e.g. ["--cache-mib", "64"] or ["-o", "ro"]. base: where temp dirs go
    (tempfile's default if None). keep_store: do not remove a store this call created.
    watchdog: seconds after which the daemon is SIGKILLed if the body still runs (a hung
    FUSE request then fails with ENOTCONN instead of hanging the suite); m.watchdog_fired.
    """
    _install_nets()
    created = []
    work = tempfile.mkdtemp(prefix="tpdefs-mount-", dir=base)
    created.append(work)
    if store_dir is not None:
        store = store_dir
    elif keep_store:
        store = tempfile.mkdtemp(prefix="tpdefs-store-", dir=base)   # the caller removes it
    else:
        store = os.path.join(work, "store")
    mnt = mnt_dir or os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    # realpath now, before anything is mounted: later, resolving a path on a hung mount
    # could block; mountinfo lists mount points by their real path.
    m = Mount(os.path.abspath(tpdefs_bin), os.path.realpath(store), os.path.realpath(mnt),
              os.path.join(work, "tpdefs.log"), list(opts), created)
    timer = None
    try:
        m.start(timeout)
        if watchdog:
            def fire():
                m.watchdog_fired = True
                print(f"WATCHDOG: mount body still running after {watchdog} s: killing the "
                      "daemon", file=sys.stderr, flush=True)
                m.kill()
            timer = threading.Timer(watchdog, fire)
            timer.daemon = True
            timer.start()
        yield m
    finally:
        if timer:
            timer.cancel()
        m.unmount()
        m.final_log = m.log_text(20000)   # the log file goes with the temp dir
        m.remove_dirs()


class Results:
    """Pass/fail/skip accounting in the repo's *.count convention."""

    def __init__(self, name, results_dir=None):
        self.name = name
        self.results_dir = results_dir or os.environ.get("RESULTS_DIR") or None
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(cond)

    def skip_one(self, name, why=""):
        self.skipped += 1
        print(f"SKIP {name}" + (f": {why}" if why else ""), flush=True)

    def _write(self, p, f, s):
        if self.results_dir:
            os.makedirs(self.results_dir, exist_ok=True)
            with open(os.path.join(self.results_dir, self.name + ".count"), "w") as out:
                out.write(f"{p} {f} {s}\n")

    def finish(self):
        self._write(self.passed, self.failed, self.skipped)
        tail = f", {self.skipped} skipped" if self.skipped else ""
        print(f"{self.name}: {self.passed} passed, {self.failed} failed{tail}"
              + (f" ({' '.join(self.failures)})" if self.failures else ""), flush=True)
        sys.exit(1 if self.failed else 0)

    def skip(self, reason):
        print(f"SKIP {self.name}: {reason}", flush=True)
        self._write(0, 0, 1)
        sys.exit(77)


def _main(argv):
    if len(argv) < 2 or argv[0] != "run" or "--" not in argv:
        print(__doc__.split("Command line")[1], file=sys.stderr)
        return 2
    argv = argv[1:]
    rc_file = base = limit = None
    while argv and argv[0].startswith("--") and argv[0] != "--":
        if argv[0] == "--daemon-rc":
            rc_file, argv = argv[1], argv[2:]
        elif argv[0] == "--base":
            base, argv = argv[1], argv[2:]
        elif argv[0] == "--timeout":
            limit, argv = float(argv[1]), argv[2:]
        else:
            print(f"unknown option {argv[0]}", file=sys.stderr)
            return 2
    sep = argv.index("--")
    daemon, cmd = argv[:sep], argv[sep + 1:]
    if not daemon or not cmd:
        print("need TPDEFS_BIN and a command", file=sys.stderr)
        return 2
    rc = 125
    m = None
    try:
        with mounted(daemon[0], opts=daemon[1:], base=base, watchdog=limit) as m:
            env = dict(os.environ, TPDEFS_MNT=m.mnt, TPDEFS_STORE=m.store, TPDEFS_LOG=m.log)
            rc = subprocess.run(cmd, env=env).returncode
    except MountError as e:
        print(f"mount failed: {e}", file=sys.stderr)
    if m is not None:
        if m.teardown_notes:
            print("teardown: " + "; ".join(m.teardown_notes), file=sys.stderr)
        if rc_file:
            with open(rc_file, "w") as f:
                f.write(f"{m.returncode if m.returncode is not None else 'none'}\n")
    return rc


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

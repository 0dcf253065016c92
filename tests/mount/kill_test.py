#!/usr/bin/python3
"""The daemon killed (SIGKILL) at random moments, then remounted: nothing committed is lost.

Each round mounts the store, runs a training-like writer (checkpoints of float32 tensors
saved into checkpoint-N/, sometimes through a temporary directory renamed into place, a
keep-last-3 rotation deleting the oldest, a file rewritten in place, pauses in which the
deferred compression and the re-encoding after a delete run) and SIGKILLs the daemon at a
random moment. Then it remounts and checks:

- every file whose close() or fsync() had returned reads back bit-exact (sha256);
- deleted files stay deleted, and nothing else is visible: the tree equals the state before
  the step that was in flight or the state after it (for a file being written: absent,
  empty as its create committed it, or complete; never half-written);
- after a clean unmount `tpde fsck` finds no problem and the store keeps no abandoned work
  (tmp/ holds no file).

Rounds: at least MIN_ROUNDS (50), then more until KILL_SECONDS (default 120) have passed.
Seeded: TPDEFS_KILL_SEED=S repeats a run; a failure prints the round's seed.

Usage: kill_test.py TPDEFS_BIN [RESULTS_DIR]   (tpde is taken from beside TPDEFS_BIN).
Results: RESULTS_DIR/mount_kill.count. Exits 77 (skip) without /dev/fuse, fusermount3 or root.
"""
import errno
import hashlib
import os
import random
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import MountError, Results, mounted, require_mount  # noqa: E402

import numpy as np  # noqa: E402  (Debian's python3-numpy, installed with python3-torch)

MIN_ROUNDS = 50
KEEP = 3
CHUNK = 1 << 20
EMPTY = hashlib.sha256(b"").hexdigest()


class Killed(Exception):
    """The mount went away under the writer (the daemon was killed)."""


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Model:
    """What the mount must show: committed files (path -> sha256) and, while a step runs,
    the state it leads to. After a kill the tree must equal `before` or `after`."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.pending = None        # the state after the step in flight

    def begin(self, after):
        self.pending = after

    def done(self):
        self.files, self.pending = self.pending, None

    def acceptable(self):
        return [self.files] + ([self.pending] if self.pending is not None else [])


class Writer:
    """A training run's saves, step by step, each step recorded in the model first."""

    def __init__(self, rng):
        self.root = self.model = self.stop = None     # set for each round
        self.rng = rng
        self.step = 0
        n = 1 << 18 | rng.randrange(1 << 12)           # ~1 MiB tensors, odd sizes
        self.weights = np.frombuffer(rng.randbytes(4 * n), dtype=np.float32).copy()
        self.weights[~np.isfinite(self.weights)] = 0.0
        self.weights = (self.weights % 1.0).astype(np.float32)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def call(self, fn, *args):
        """fn(*args); an error once the daemon is gone ends the round, any other fails it."""
        try:
            return fn(*args)
        except OSError as e:
            if self.stop.is_set() or e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                raise Killed() from e
            raise

    def tensor_bytes(self):
        # A few percent of the weights move a little each step (a delta's usual shape).
        idx = np.frombuffer(self.rng.randbytes(4 * (len(self.weights) // 20)),
                            dtype=np.uint32) % len(self.weights)
        self.weights[idx] += np.float32(1e-3)
        tail = self.rng.randbytes(self.rng.randrange(1, 97))  # odd file sizes
        return self.weights.tobytes() + tail

    def write_file(self, rel, data):
        """create, then write + close: two steps, each committed when its call returns."""
        after = dict(self.model.files)
        after[rel] = EMPTY
        self.model.begin(after)
        fd = self.call(os.open, self.path(rel), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        self.model.done()
        after = dict(self.model.files)
        after[rel] = sha(data)
        self.model.begin(after)
        try:
            for off in range(0, len(data), CHUNK):
                view = memoryview(data)[off:off + CHUNK]
                while view:
                    view = view[self.call(os.write, fd, view):]
            if self.rng.random() < 0.3:
                self.call(os.fsync, fd)
                self.model.done()
                self.model.begin(dict(self.model.files))
        finally:
            self.call(os.close, fd)
        self.model.done()

    def save(self):
        name = f"checkpoint-{self.step}"
        tmp = self.rng.random() < 0.5
        d = name + ".tmp" if tmp else name
        self.call(os.makedirs, self.path(d), 0o755, True)
        for f in ("model.bin", "optimizer.bin"):
            self.write_file(f"{d}/{f}", self.tensor_bytes())
        if tmp:
            after = {(k.replace(d + "/", name + "/", 1) if k.startswith(d + "/") else k): v
                     for k, v in self.model.files.items()}
            self.model.begin(after)
            self.call(os.rename, self.path(d), self.path(name))
            self.model.done()
        self.step += 1

    def checkpoints(self):
        steps = sorted({int(k.split("/")[0].split("-")[1]) for k in self.model.files
                        if k.startswith("checkpoint-") and "/" in k
                        and not k.split("/")[0].endswith(".tmp")})
        return steps

    def rotate(self):
        steps = self.checkpoints()
        for s in steps[:-KEEP]:
            d = f"checkpoint-{s}"
            for rel in sorted(k for k in self.model.files if k.startswith(d + "/")):
                after = dict(self.model.files)
                del after[rel]
                self.model.begin(after)
                self.call(os.unlink, self.path(rel))
                self.model.done()
            self.call(os.rmdir, self.path(d))

    def rewrite_in_place(self):
        files = sorted(k for k, v in self.model.files.items()
                       if k.endswith("model.bin") and v != EMPTY)
        if not files:
            return
        rel = self.rng.choice(files)
        data = bytearray(self.call(read_all, self.path(rel)))
        off = self.rng.randrange(len(data))
        patch = self.rng.randbytes(min(len(data) - off, self.rng.randrange(1, 64 << 10)))
        data[off:off + len(patch)] = patch
        after = dict(self.model.files)
        after[rel] = sha(bytes(data))
        self.model.begin(after)
        fd = self.call(os.open, self.path(rel), os.O_RDWR)
        try:
            self.call(os.pwrite, fd, patch, off)
        finally:
            self.call(os.close, fd)
        self.model.done()

    def run(self):
        while not self.stop.is_set():
            r = self.rng.random()
            if r < 0.55:
                self.save()
                self.rotate()
            elif r < 0.85:
                self.rewrite_in_place()
            else:
                # A pause: deferred compression and re-encoding after deletes run now.
                time.sleep(self.rng.uniform(0.1, 0.8))


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def tree_of(root):
    """path -> sha256 of every file below root; dirs with no file do not count."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
            out[os.path.relpath(p, root)] = h.hexdigest()
    return out


def describe(actual, states):
    best = min(states, key=lambda s: len(set(s.items()) ^ set(actual.items())))
    diff = []
    for k in sorted(set(best) | set(actual)):
        if best.get(k) != actual.get(k):
            diff.append(f"{k}: expected {(best.get(k) or 'absent')[:12]} "
                        f"found {(actual.get(k) or 'absent')[:12]}")
    return "; ".join(diff[:6])


def files_under(d):
    return [os.path.join(p, n) for p, _ds, ns in os.walk(d) for n in ns]


def main():
    tpdefs = os.path.abspath(sys.argv[1])
    res = Results("mount_kill", sys.argv[2] if len(sys.argv) > 2 else None)
    require_mount(res, tpdefs)
    tpde = os.path.join(os.path.dirname(tpdefs), "tpde")
    budget = float(os.environ.get("KILL_SECONDS", "120"))
    seed = int(os.environ.get("TPDEFS_KILL_SEED", str(random.randrange(1 << 31))))
    print(f"seed {seed} (TPDEFS_KILL_SEED={seed} repeats this run); budget {budget:.0f} s, "
          f"at least {MIN_ROUNDS} rounds", flush=True)
    base = os.environ.get("TMPDIR")
    store_parent = __import__("tempfile").mkdtemp(prefix="tpdefs-kill-", dir=base)
    store = os.path.join(store_parent, "store")
    opts = ["--idle-compress-seconds", "0"]
    model = Model()
    w = Writer(random.Random(seed))
    start = time.monotonic()
    rounds = 0
    failures = {"lost": [], "fsck": [], "leftovers": [], "daemon": [], "mount": []}
    moments = []
    in_flight = [0, 0]     # rounds killed with a step in flight: found undone, found done
    try:
        while rounds < MIN_ROUNDS or time.monotonic() - start < budget:
            round_seed = seed + rounds
            rng = random.Random(round_seed)
            try:
                # Work, then SIGKILL at a random moment.
                with mounted(tpdefs, store_dir=store, opts=opts, base=base, watchdog=60) as m:
                    w.root, w.model, w.rng, w.stop = m.mnt, model, rng, threading.Event()
                    crashed = []

                    def body():
                        try:
                            w.run()
                        except Killed:
                            pass
                        except Exception as e:          # noqa: BLE001 (reported below)
                            crashed.append(repr(e))
                    t = threading.Thread(target=body, daemon=True)
                    t.start()
                    when = rng.uniform(0.1, 3.0)
                    moments.append(when)
                    time.sleep(when)
                    w.stop.set()
                    m.kill()
                    t.join(30)
                    if t.is_alive() or crashed:
                        failures["daemon"].append(
                            f"round {rounds} seed {round_seed}: writer "
                            f"{'hung' if t.is_alive() else crashed[0]}")
                    w.step += 1    # the save in flight may have left its directory
                # Remount: the tree is the committed state (or the step in flight done).
                with mounted(tpdefs, store_dir=store, opts=opts, base=base, watchdog=60) as m:
                    actual = tree_of(m.mnt)
                states = model.acceptable()
                match = [s for s in states if s == actual]
                if model.pending is not None:
                    in_flight[1 if match and match[-1] is model.pending else 0] += 1
                if not match:
                    failures["lost"].append(f"round {rounds} seed {round_seed} (killed after "
                                            f"{when:.2f} s): {describe(actual, states)}")
                    model = Model(actual)      # go on from what is there
                else:
                    model = Model(match[-1])
                if m.returncode != 0:
                    failures["daemon"].append(f"round {rounds} seed {round_seed}: clean unmount "
                                              f"exit {m.returncode}: {m.final_log[-400:]}")
                # Clean: fsck, and no abandoned work left in tmp/.
                r = subprocess.run([tpde, "fsck", store], capture_output=True, text=True,
                                   timeout=120)
                if r.returncode != 0:
                    failures["fsck"].append(f"round {rounds} seed {round_seed}: "
                                            f"{(r.stdout + r.stderr)[-400:]}")
                left = files_under(os.path.join(store, "tmp"))
                if left:
                    failures["leftovers"].append(f"round {rounds} seed {round_seed}: "
                                                 f"{len(left)} file(s) in tmp/: {left[:3]}")
            except MountError as e:
                failures["mount"].append(f"round {rounds} seed {round_seed}: {e}"[:600])
                break
            rounds += 1
    finally:
        subprocess.run(["rm", "-rf", store_parent])
    elapsed = time.monotonic() - start
    print(f"{rounds} rounds in {elapsed:.0f} s, kills at {min(moments, default=0):.2f}-"
          f"{max(moments, default=0):.2f} s into a round, last step {w.step}; a step was in flight at {sum(in_flight)} kills (found "
          f"undone {in_flight[0]}, done {in_flight[1]})", flush=True)
    res.check("rounds_run", rounds >= MIN_ROUNDS, f"{rounds} rounds (seed {seed})")
    res.check("mounts_after_kill", not failures["mount"], "; ".join(failures["mount"]))
    res.check("writer_and_daemon", not failures["daemon"], "; ".join(failures["daemon"][:3]))
    res.check("committed_files_exact", not failures["lost"],
              f"{len(failures['lost'])} round(s): " + " | ".join(failures["lost"][:3]))
    res.check("fsck_clean_after_kill", not failures["fsck"],
              f"{len(failures['fsck'])} round(s): " + " | ".join(failures["fsck"][:2]))
    res.check("abandoned_work_reclaimed", not failures["leftovers"],
              f"{len(failures['leftovers'])} round(s): " + " | ".join(failures["leftovers"][:2]))
    res.finish()


if __name__ == "__main__":
    main()

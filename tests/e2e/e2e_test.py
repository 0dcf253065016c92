#!/usr/bin/python3
"""End to end: real PyTorch training code writing real checkpoints into a real tpdefs mount
with the file patterns of the usual frameworks, then reading them back with the usual tools.

Scenarios (each a few counted checks):
  s1  torch.save / torch.load of a model state and of a full training state (model, AdamW,
      step, torch/numpy/python RNG, tensors of several dtypes): bytes and loaded objects exact.
  s2  resume is bit-exact: a training process saving every 10 steps into the mount is
      SIGKILLed after its step-20 checkpoint; a new process resumes from the newest checkpoint
      on the mount to step 30. The loss curve and the final state equal those of an
      uninterrupted run writing into a plain directory, and so do the bytes of the step-10
      and step-20 files. (Fresh mount.)
  s3  Hugging Face Trainer's pattern: checkpoint-N/ with model.safetensors (one open/write),
      optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin, config.json,
      trainer_state.json, every 5 steps from step 25 to 50; rotation save_total_limit=2 by
      shutil.rmtree, which must free store space.
  s4  Lightning's pattern: torch.save into a BytesIO, written to a mkstemp file in /tmp,
      shutil.move (cross-device: copy2 + unlink) into the mount; last.ckpt a symlink replaced
      each epoch (symlink to a temp name + os.replace); save_top_k=2 with os.remove.
  s5  DeepSpeed's pattern: 4 processes write global_stepN/mp_rank_0R_model_states.pt at the
      same time; `latest` is rewritten in place (open('w') and open('r+') + truncate).
  s6  torch.distributed.checkpoint's pattern: 4 processes write __R_0.distcp (concatenated
      torch.save blobs) with fsync; .metadata.tmp written, fsynced, renamed to .metadata;
      loaded back DCP-style (seek/read of slices).
  s7  mmap: safetensors files mapped (MAP_SHARED, MAP_PRIVATE, numpy.memmap), tensors exact.
  s8  standard tools: ls -l sizes, cp -a / rsync -a / tar round trips byte-identical, du
      shows the stored (smaller) size. (rsync: skipped when not installed.)
Then every file once more, a clean unmount, and a remount with every file exact again.

Every file written is hashed as written: torch.save(obj, path) into the mount is repeated
into a plain shadow directory with the same file name (torch.save's zip records are named
after the file, so a BytesIO copy would differ) and the shadow is hashed; bytes written
with write() are hashed directly. Each chain (s2, s3 model.safetensors and optimizer.pt,
s4, s5) must delta-encode: every older file gets user.tpde.parent = the newer file and
user.tpde.ratio > 1.2 (polled: the daemon re-encodes in the background).

Usage: e2e_test.py TPDEFS_BIN [RESULTS_DIR] [--only=s1,s3,...] [--keep]
RESULTS_DIR defaults to $RESULTS_DIR; results go to RESULTS_DIR/e2e.count. Exits 77 (skip)
without /dev/fuse, fusermount3, root or an importable torch (Debian: python3-torch).
"""
import hashlib
import io
import json
import mmap
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mount"))
from mount_util import (sha_file, MountError, Results, mounted, require_mount,  # noqa: E402
                        skip_reason)

MIB = 1 << 20
RATIO_MIN = 1.2         # an older version of a chain must be stored at least this much smaller
SETTLE_TIMEOUT = 30     # seconds to wait for the daemon's background re-encoding
MOUNT_WATCHDOG = 240    # seconds of one mount's body; then the daemon is killed (hung calls)
ALL_SCENARIOS = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]


# ------------------------------------------------------------------------ torch and models

def torch_setup(threads=1):
    import torch
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch


def make_mlp(torch, seed):
    """~498k fp32 parameters (2 MB), with dropout so the RNG state matters for resuming."""
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 768), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(768, 512), nn.GELU(), nn.Linear(512, 10))


def make_data(torch, seed, n=4096):
    """A learnable task: labels from a random linear teacher, plus label noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 128, generator=g)
    w = torch.randn(128, 10, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, 10, generator=g)).argmax(1)
    return x, y


def mlp_step(torch, model, opt, x, y, batch=64):
    """One step; draws on torch's RNG (batch, dropout) and numpy's (input noise)."""
    import numpy as np
    model.train()
    idx = torch.randint(0, len(x), (batch,))
    noise = torch.from_numpy(np.random.standard_normal((batch, x.shape[1])).astype(np.float32))
    loss = torch.nn.functional.cross_entropy(model(x[idx] + 0.05 * noise), y[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())


def rng_state(torch):
    import numpy as np
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "cpu": torch.get_rng_state()}


def set_rng_state(torch, st):
    import numpy as np
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["cpu"])


def seed_all(torch, seed):
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clone_tree(torch, obj):
    """A deep copy with tensors cloned (what was saved, kept to compare with later)."""
    import copy
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(torch, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(torch, v) for v in obj)
    return copy.deepcopy(obj)


def tensor_bytes(torch, t):
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def deep_diff(torch, a, b, where="", out=None, limit=8):
    """Differences between two saved objects, bit-exact for tensors and arrays."""
    import numpy as np
    if out is None:
        out = []
    if len(out) >= limit:
        return out
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor):
            out.append(f"{where}: tensor vs {type(b).__name__}")
        elif a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            out.append(f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
        elif tensor_bytes(torch, a) != tensor_bytes(torch, b):
            out.append(f"{where}: values differ")
    elif isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.dtype != b.dtype or a.shape != b.shape \
                or a.tobytes() != b.tobytes():
            out.append(f"{where}: ndarray differs")
    elif isinstance(a, dict):
        if not isinstance(b, dict) or list(a.keys()) != list(b.keys()):
            out.append(f"{where}: keys {list(a)[:6]} vs "
                       f"{list(b)[:6] if isinstance(b, dict) else type(b).__name__}")
        else:
            for k in a:
                deep_diff(torch, a[k], b[k], f"{where}/{k}", out, limit)
    elif isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            out.append(f"{where}: {type(a).__name__}[{len(a)}] vs {type(b).__name__}"
                       f"[{len(b) if hasattr(b, '__len__') else '?'}]")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                deep_diff(torch, x, y, f"{where}[{i}]", out, limit)
    elif isinstance(a, float):
        if not (isinstance(b, float) and (a == b or (a != a and b != b))):
            out.append(f"{where}: {a!r} vs {b!r}")
    elif type(a) is not type(b) or a != b:
        out.append(f"{where}: {a!r:.60} vs {b!r:.60}")
    return out


# --------------------------------------------------------------------------- safetensors

ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
             "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
             "bool": "BOOL"}
ST_ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]   # enum order
ST_NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4",
            "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def safetensors_bytes(torch, tensors, metadata=None):
    """The bytes safetensors' serialize writes: u64 LE header length, JSON header padded with
    spaces to a multiple of 8, tensors sorted by dtype (descending) then name, packed."""
    items = []
    for name, t in tensors.items():
        dt = ST_DTYPES[str(t.dtype).replace("torch.", "")]
        items.append((-ST_ORDER.index(dt), name, dt, t))
    items.sort(key=lambda i: (i[0], i[1]))
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for _, name, dt, t in items:
        b = tensor_bytes(torch, t)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def safetensors_parse(buf):
    """(header dict, data start) from a bytes-like object (e.g. an mmap)."""
    n = struct.unpack("<Q", bytes(buf[:8]))[0]
    return json.loads(bytes(buf[8:8 + n])), 8 + n


# ------------------------------------------------------------------------------ helpers

def first_diff(a_path, b_path, chunk=MIB):
    """Offset of the first differing byte of two files (for failure messages)."""
    try:
        with open(a_path, "rb") as a, open(b_path, "rb") as b:
            off = 0
            while True:
                x, y = a.read(chunk), b.read(chunk)
                if x != y:
                    for i in range(min(len(x), len(y))):
                        if x[i] != y[i]:
                            return off + i
                    return off + min(len(x), len(y))
                if not x:
                    return None
                off += len(x)
    except OSError as e:
        return f"({e})"


def tpde_xattr(path, name):
    return os.getxattr(path, "user.tpde." + name).rstrip(b"\0").decode()


def store_stats(mnt):
    return json.loads(os.getxattr(mnt, "user.tpde.stats").rstrip(b"\0"))


def busy_key(s):
    """What changes while the daemon works in the background (maintenance_pending: queued
    or running re-encodes, where the daemon reports it)."""
    return (s.get("stored_bytes"), s.get("reencodes"), s.get("commits"),
            s.get("maintenance_pending", 0) > 0 and time.monotonic())


def wait_parent(mnt, path, parent_rel, timeout=SETTLE_TIMEOUT, idle_for=2.0):
    """Polls until `path` is a delta against `parent_rel`, or the daemon's background work
    has been idle (nothing pending, stats unchanged) for `idle_for` seconds, or `timeout`.
    Returns (ratio, parent, seconds waited)."""
    t0 = time.monotonic()
    parent, ratio = "", 0.0
    last, since = None, t0
    while True:
        try:
            parent = tpde_xattr(path, "parent")
            ratio = float(tpde_xattr(path, "ratio") or 0)
            s = store_stats(mnt)
        except (OSError, ValueError) as e:
            return 0.0, f"<{e}>", time.monotonic() - t0
        now = time.monotonic()
        key = busy_key(s)
        if key != last:
            last, since = key, now
        if parent == parent_rel or now - t0 > timeout or now - since > idle_for:
            return ratio, parent, now - t0
        time.sleep(0.1)


def settle(mnt, timeout=SETTLE_TIMEOUT):
    """Waits until the daemon's background work is idle: nothing pending, stored_bytes and
    the re-encode count unchanged over 3 polls 0.25 s apart. Returns the last stats."""
    t0 = time.monotonic()
    last, same = None, 0
    while time.monotonic() - t0 < timeout:
        s = store_stats(mnt)
        key = busy_key(s)
        same = same + 1 if key == last else 0
        last = key
        if same >= 2:
            return s
        time.sleep(0.25)
    return store_stats(mnt)


def dir_blocks(path):
    total = 0
    for dp, dns, fns in os.walk(path):
        for n in fns:
            try:
                total += os.lstat(os.path.join(dp, n)).st_blocks * 512
            except OSError:
                pass
    return total


class Ctx:
    """One mount: the expected content of every file written (rel -> sha, size), the
    shadow copies, the ratios observed, and the checks."""

    def __init__(self, res, m, shadow, torch):
        self.res, self.m, self.mnt, self.shadow, self.torch = res, m, m.mnt, shadow, torch
        self.expected = {}      # rel -> (sha256, size)
        self.links = {}         # rel -> symlink target
        self.ratios = {}        # label -> [(rel, ratio, has the expected parent)]

    def p(self, rel):
        return os.path.join(self.mnt, rel)

    def sp(self, rel):
        p = os.path.join(self.shadow, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def check(self, name, cond, detail=""):
        return self.res.check(name, cond, detail)

    def tsave(self, obj, rel):
        """torch.save straight into the mount; the same call into the shadow gives the hash."""
        self.torch.save(obj, self.p(rel))
        sh = self.sp(rel)
        self.torch.save(obj, sh)
        self.expected[rel] = sha_file(sh)
        return self.expected[rel]

    def put(self, rel, data):
        """A file written with one open() and one write(): bytes in binary mode (as
        safetensors' serialize_file), str in text mode (as json writers)."""
        if isinstance(data, bytes):
            enc = data
            with open(self.p(rel), "wb") as f:
                f.write(data)
        else:
            enc = data.encode()
            with open(self.p(rel), "w", encoding="utf-8") as f:
                f.write(data)
        with open(self.sp(rel), "wb") as f:
            f.write(enc)
        self.expected[rel] = (hashlib.sha256(enc).hexdigest(), len(enc))

    def record(self, rel, sha, size):
        self.expected[rel] = (sha, size)

    def forget(self, prefix):
        for k in [k for k in self.expected if k == prefix or k.startswith(prefix + "/")]:
            del self.expected[k]
        for k in [k for k in self.links if k == prefix or k.startswith(prefix + "/")]:
            del self.links[k]

    def verify(self, rels=None, root=None):
        """Problems found comparing files under `root` (the mount) with the expectations."""
        root = root or self.mnt
        bad = []
        for rel in sorted(self.expected if rels is None else rels):
            sha, size = self.expected[rel]
            p = os.path.join(root, rel)
            try:
                got, n = sha_file(p)
            except OSError as e:
                bad.append(f"{rel}: {e}")
                continue
            if (got, n) != (sha, size):
                bad.append(f"{rel}: {n} bytes sha {got[:12]}, expected {size} bytes sha "
                           f"{sha[:12]}; first difference at byte "
                           f"{first_diff(p, os.path.join(self.shadow, rel))}")
        return bad

    def delta(self, label, rel, newer_rel, idle_for=3.0):
        """Waits until `rel` is a delta against `newer_rel`; records the ratio; returns a
        problem or None."""
        ratio, parent, waited = wait_parent(self.mnt, self.p(rel), newer_rel, idle_for=idle_for)
        self.ratios.setdefault(label, []).append((rel, ratio, parent == newer_rel))
        print(f"  delta {rel}: ratio {ratio:.4f} parent {parent!r} ({waited:.1f} s)",
              flush=True)
        if parent != newer_rel:
            return f"{rel}: parent {parent!r} after {waited:.0f} s, expected {newer_rel!r}"
        if not ratio > RATIO_MIN:
            return f"{rel}: ratio {ratio} (parent {parent}) not > {RATIO_MIN}"
        return None


def run_scenario(ctx, name, fn, *args):
    t0 = time.monotonic()
    print(f"--- {name}", flush=True)
    try:
        if not ctx.m.alive():
            ctx.check(f"{name}_daemon_alive", False, "the daemon died before this scenario")
            return
        fn(ctx, *args)
    except Exception as e:
        ctx.check(f"{name}_ran", False, f"{type(e).__name__}: {e}\n"
                  + traceback.format_exc(limit=6))
    print(f"--- {name}: {time.monotonic() - t0:.1f} s", flush=True)


# ---------------------------------------------------------- s1: torch.save / torch.load

def s1_torch_save_load(ctx):
    torch = ctx.torch
    os.makedirs(ctx.p("s1"))
    seed_all(torch, 1)
    model = make_mlp(torch, 11)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = make_data(torch, 12)
    losses = [mlp_step(torch, model, opt, x, y) for _ in range(5)]
    sd = model.state_dict()
    ctx.tsave(sd, "s1/model_state.pt")
    w = sd["0.weight"]
    state = {"model": sd, "optimizer": opt.state_dict(), "step": 5, "losses": losses,
             "rng": rng_state(torch),
             "extra": {"bf16": w.to(torch.bfloat16), "f16": w[:7].to(torch.float16),
                       "f64": w[:3].double(), "i64": torch.arange(-5, 1000),
                       "i8": torch.arange(-128, 128, dtype=torch.int8),
                       "bool": w[:5] > 0, "scalar": torch.tensor(3.5),
                       "noncontig": w.t()[:4, ::3], "nan_inf": torch.tensor(
                           [float("nan"), float("inf"), -0.0, 1e-45])}}
    kept = clone_tree(torch, state)
    ctx.tsave(state, "s1/train_state.pt")
    for rel, want in (("s1/model_state.pt", clone_tree(torch, sd)), ("s1/train_state.pt", kept)):
        tag = os.path.basename(rel).split(".")[0]
        bad = ctx.verify([rel])
        ctx.check(f"s1_{tag}_bytes_exact", not bad, "; ".join(bad))
        got = torch.load(ctx.p(rel))
        d = deep_diff(torch, want, got)
        ctx.check(f"s1_{tag}_torch_load_exact", not d, "; ".join(d))
    # The loaded training state continues exactly like the original.
    got = torch.load(ctx.p("s1/train_state.pt"))
    m2 = make_mlp(torch, 999)
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-4)
    m2.load_state_dict(got["model"])
    o2.load_state_dict(got["optimizer"])
    set_rng_state(torch, got["rng"])
    a = [mlp_step(torch, m2, o2, x, y) for _ in range(3)]
    set_rng_state(torch, kept["rng"])
    b = [mlp_step(torch, model, opt, x, y) for _ in range(3)]
    d = deep_diff(torch, model.state_dict(), m2.state_dict())
    ctx.check("s1_loaded_state_trains_identically", a == b and not d, f"losses {a} vs {b}; {d}")


# --------------------------------------------------------- s2: bit-exact resume after kill

def worker_train(argv):
    """Subprocess: train to --steps, torch.save the full state every --every steps into --out
    (as step-N.pt), log losses; --resume FILE starts from a checkpoint; --slow-after N sleeps
    after each step past N (so the parent can kill it between checkpoints)."""
    a = dict(zip(argv[0::2], argv[1::2]))
    torch = torch_setup(1)
    out, steps, every = a["--out"], int(a["--steps"]), int(a["--every"])
    shadow = a.get("--shadow")
    slow_after = int(a.get("--slow-after", 10 ** 9))
    seed_all(torch, 2)
    model = make_mlp(torch, 21)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x, y = make_data(torch, 22)
    start = 0
    if "--resume" in a:
        st = torch.load(a["--resume"])
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        set_rng_state(torch, st["rng"])
        start = st["step"]
    os.makedirs(out, exist_ok=True)
    with open(a["--losslog"], "a") as log:
        for step in range(start + 1, steps + 1):
            loss = mlp_step(torch, model, opt, x, y)
            log.write(f"{step} {loss.hex()}\n")
            log.flush()
            if step % every == 0:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "step": step, "rng": rng_state(torch)}
                name = f"step-{step}.pt"
                torch.save(state, os.path.join(out, name))
                hashed = os.path.join(out, name)
                if shadow:
                    os.makedirs(shadow, exist_ok=True)
                    hashed = os.path.join(shadow, name)
                    torch.save(state, hashed)
                sha, n = sha_file(hashed)
                print(f"SAVED {step} {name} {sha} {n}", flush=True)
            if step > slow_after:
                time.sleep(0.3)
    print("DONE", flush=True)


def read_losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            s, v = line.split()
            out[int(s)] = float.fromhex(v)
    return out


def s2_resume(ctx, plain):
    torch = ctx.torch
    run, shadow = ctx.p("run"), os.path.join(ctx.shadow, "run")
    logs = os.path.join(plain, "logs")
    os.makedirs(logs)
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--steps", "30", "--every", "10"]
    # The uninterrupted reference run (plain directory), concurrently with the killed one.
    ref = subprocess.Popen(me + ["--worker-train", "--out", os.path.join(plain, "run"),
                                 "--losslog", os.path.join(logs, "ref.log")] + common,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen(me + ["--worker-train", "--out", run, "--shadow", shadow,
                                    "--losslog", os.path.join(logs, "killed.log"),
                                    "--slow-after", "20"] + common,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(90, killed.kill)
    timer.start()
    saved = {}
    try:
        for line in killed.stdout:
            if line.startswith("SAVED"):
                _, step, name, sha, n = line.split()
                saved[int(step)] = name
                ctx.record(f"run/{name}", sha, int(n))
                if int(step) == 20:
                    killed.send_signal(signal.SIGKILL)
                    break
    finally:
        timer.cancel()
    killed.wait()
    kerr = killed.stderr.read()
    ctx.check("s2_training_killed_after_step20", killed.returncode == -signal.SIGKILL
              and sorted(saved) == [10, 20], f"exit {killed.returncode}, saved {saved}, "
              f"stderr {kerr[-1500:]}")
    listing = sorted(os.listdir(run))
    ctx.check("s2_mount_has_checkpoints_10_20", listing == ["step-10.pt", "step-20.pt"],
              f"{listing}")
    bad = ctx.verify(["run/step-10.pt", "run/step-20.pt"])
    ctx.check("s2_checkpoints_exact_after_kill", not bad, "; ".join(bad))
    # Resume from the newest checkpoint on the mount, as a training script would find it.
    newest = max((n for n in os.listdir(run) if re.fullmatch(r"step-\d+\.pt", n)),
                 key=lambda n: int(re.findall(r"\d+", n)[0]))
    resumed = subprocess.run(me + ["--worker-train", "--out", run, "--shadow", shadow,
                                   "--losslog", os.path.join(logs, "resumed.log"),
                                   "--resume", os.path.join(run, newest)] + common,
                             capture_output=True, text=True, timeout=120)
    for line in resumed.stdout.splitlines():
        if line.startswith("SAVED"):
            _, step, name, sha, n = line.split()
            ctx.record(f"run/{name}", sha, int(n))
    ctx.check("s2_resumed_run_finished", resumed.returncode == 0 and "DONE" in resumed.stdout
              and "run/step-30.pt" in ctx.expected,
              f"resumed from {newest}: exit {resumed.returncode}; {resumed.stderr[-1500:]}")
    rout, rerr = ref.communicate(timeout=120)
    ctx.check("s2_reference_run_finished", ref.returncode == 0 and "DONE" in rout,
              f"exit {ref.returncode}; {rerr[-1500:]}")
    # Loss curve: steps 1..20 of the killed run, 21..30 of the resumed one.
    ref_l = read_losses(os.path.join(logs, "ref.log"))
    k_l = read_losses(os.path.join(logs, "killed.log"))
    r_l = read_losses(os.path.join(logs, "resumed.log"))
    curve = {s: k_l[s] for s in range(1, 21) if s in k_l}
    curve.update(r_l)
    diffs = [f"step {s}: {curve.get(s)!r} vs {ref_l.get(s)!r}" for s in range(1, 31)
             if curve.get(s) != ref_l.get(s)]
    ctx.check("s2_loss_curve_identical", not diffs and len(ref_l) == 30,
              f"{len(diffs)} of 30 steps differ: {diffs[:5]}")
    print(f"  losses: step 1 {ref_l.get(1)}, step 30 {ref_l.get(30)}; killed run reached "
          f"step {max(k_l)} before SIGKILL", flush=True)
    # Final state (model, optimizer, RNG, step) equal to the uninterrupted run's.
    bad = ctx.verify()
    ctx.check("s2_all_checkpoints_exact", not bad, "; ".join(bad))
    ref30 = os.path.join(plain, "run", "step-30.pt")
    if os.path.exists(ref30) and "run/step-30.pt" in ctx.expected:
        a = torch.load(ctx.p("run/step-30.pt"))
        b = torch.load(ref30)
        d = deep_diff(torch, b, a)
        ctx.check("s2_final_state_identical", not d, "; ".join(d))
    else:
        ctx.check("s2_final_state_identical", False, "step-30.pt missing")
    # Checkpoint files: 10 and 20 come from the same process history as the reference's, so
    # they must be the same bytes. (step-30 is equal as an object, checked above, but not as
    # bytes: pickle's memo follows object identity, and the resumed process's optimizer keys
    # are unpickled strings, not the interned literals, so data.pkl differs by a few bytes.)
    diff_files = [f"step-{s}.pt" for s in (10, 20)
                  if not os.path.exists(os.path.join(plain, "run", f"step-{s}.pt"))
                  or ctx.expected.get(f"run/step-{s}.pt")
                  != sha_file(os.path.join(plain, "run", f"step-{s}.pt"))]
    ctx.check("s2_checkpoint_files_equal_uninterrupted_run", not diff_files,
              f"differ from the plain run's: {diff_files}")
    probs = [ctx.delta("s2 run/step-N.pt (full state)", f"run/step-{s}.pt",
                       f"run/step-{s + 10}.pt") for s in (10, 20)]
    probs = [p for p in probs if p]
    ctx.check("s2_chain_delta_encoded", not probs, "; ".join(probs))


# ------------------------------------------------------------- s3: Hugging Face Trainer

def make_tiny_lm(torch, seed, vocab=512, d=128):
    nn = torch.nn
    torch.manual_seed(seed)

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            layer = nn.TransformerEncoderLayer(d, 4, 512, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.lm_head = nn.Linear(d, vocab)

        def forward(self, ids):
            n = ids.shape[1]
            mask = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
            return self.lm_head(self.encoder(self.embed(ids), mask=mask))

    return TinyLM()


def markov_tokens(torch, seed, vocab=512, n=1024, length=33):
    """Sequences from a sparse random Markov chain (something a small LM can learn)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, generator=g) * 3
    probs = torch.softmax(logits, 1)
    seq = torch.empty(n, length, dtype=torch.long)
    seq[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, length):
        seq[:, i] = torch.multinomial(probs[seq[:, i - 1]], 1, generator=g)[:, 0]
    return seq


def s3_hf_trainer(ctx, keep):
    torch = ctx.torch
    out = "hf"
    os.makedirs(ctx.p(out))
    seed_all(torch, 3)
    model = make_tiny_lm(torch, 31)
    nparams = sum(p.numel() for p in model.parameters())
    data = markov_tokens(torch, 32)
    # Checkpoints every 5 steps from step 25 to 50. The first 20 steps are not saved: while
    # Adam's exp_avg_sq grows from zero (it doubles between steps 5 and 10) consecutive
    # optimizer.pt files differ too much for a fair threshold (step 5's measured 1.206).
    total, every, first_save, limit = 50, 5, 25, 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 5) * max(0.0, (total - s) / total))
    args = {"output_dir": ctx.p(out), "save_steps": every, "save_total_limit": limit,
            "learning_rate": 1e-4, "per_device_train_batch_size": 16, "seed": 3}
    state = {"log_history": [], "global_step": 0, "epoch": 0.0, "best_metric": None,
             "best_model_checkpoint": None, "max_steps": total, "save_steps": every,
             "total_flos": 0, "trial_name": None}
    config = {"architectures": ["TinyLM"], "vocab_size": 512, "hidden_size": 128,
              "num_hidden_layers": 2, "torch_dtype": "float32"}
    deltas, rot = [], []
    for step in range(1, total + 1):
        model.train()
        idx = torch.randint(0, len(data), (16,))
        ids = data[idx]
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        state["log_history"].append({"loss": round(float(loss), 4), "step": step,
                                     "learning_rate": sched.get_last_lr()[0],
                                     "epoch": round(step * 16 / len(data), 4)})
        if step % every or step < first_save:
            continue
        # Trainer._save_checkpoint: files written straight into checkpoint-N/.
        ck = f"{out}/checkpoint-{step}"
        os.makedirs(ctx.p(ck), exist_ok=True)
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        ctx.put(f"{ck}/model.safetensors", safetensors_bytes(torch, sd, {"format": "pt"}))
        keep[f"{ck}/model.safetensors"] = clone_tree(torch, sd)
        ctx.put(f"{ck}/config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        ctx.tsave(args, f"{ck}/training_args.bin")
        ctx.tsave(opt.state_dict(), f"{ck}/optimizer.pt")
        keep[f"{ck}/optimizer.pt"] = clone_tree(torch, opt.state_dict())
        ctx.tsave(sched.state_dict(), f"{ck}/scheduler.pt")
        ctx.tsave(rng_state(torch), f"{ck}/rng_state.pth")
        state.update(global_step=step, epoch=step * 16 / len(data))
        ctx.put(f"{ck}/trainer_state.json", json.dumps(state, indent=2, sort_keys=True) + "\n")
        # The previous checkpoint's weights and optimizer become deltas against these.
        if step > first_save:
            prev = f"{out}/checkpoint-{step - every}"
            for f in ("model.safetensors", "optimizer.pt"):
                deltas.append(ctx.delta(f"s3 hf {f}", f"{prev}/{f}", f"{ck}/{f}"))
        # Trainer._rotate_checkpoints: sorted by number, the oldest beyond the limit go.
        cks = sorted((d for d in os.listdir(ctx.p(out)) if re.fullmatch(r"checkpoint-\d+", d)),
                     key=lambda d: int(d.split("-")[1]))
        doomed = cks[:max(0, len(cks) - limit)]
        if doomed:
            before = settle(ctx.mnt)["stored_bytes"]
            store_before = dir_blocks(ctx.m.store)
            removed_stored = sum(int(tpde_xattr(ctx.p(f"{out}/{d}/{f}"), "stored_size"))
                                 for d in doomed for f in os.listdir(ctx.p(f"{out}/{d}")))
            for d in doomed:
                shutil.rmtree(ctx.p(f"{out}/{d}"), ignore_errors=True)
                ctx.forget(f"{out}/{d}")
            after = settle(ctx.mnt)["stored_bytes"]
            rot.append((doomed, before, after, removed_stored, store_before,
                        dir_blocks(ctx.m.store)))
    print(f"  model: {nparams} parameters; checkpoints: "
          f"{sorted(k for k in keep if k.endswith('safetensors'))}", flush=True)
    for doomed, before, after, removed, sb, sa in rot:
        print(f"  rmtree {doomed}: stored_bytes {before} -> {after} (-{before - after}; the "
              f"removed files' stored_size {removed}); store dir blocks {sb} -> {sa}",
              flush=True)
    deltas = [d for d in deltas if d]
    ctx.check("s3_model_and_optimizer_chains_delta_encoded", not deltas, "; ".join(deltas))
    listing = sorted(os.listdir(ctx.p(out)))
    ctx.check("s3_rotation_removed_oldest", listing == [f"checkpoint-{total - every}",
                                                        f"checkpoint-{total}"]
              and len(rot) == 4 and not any(os.path.exists(ctx.p(f"{out}/checkpoint-{s}"))
                                            for s in range(first_save, total - every, every)),
              f"{listing}")
    ctx.check("s3_rmtree_frees_store_space",
              rot and all(a < b and b - a >= 0.5 * r for _, b, a, r, _, _ in rot),
              "; ".join(f"{d}: {b}->{a} removed stored {r}" for d, b, a, r, _, _ in rot))
    older, newest = f"{out}/checkpoint-{total - every}", f"{out}/checkpoint-{total}"
    files = sorted(os.listdir(ctx.p(newest)))
    want = sorted(["config.json", "model.safetensors", "optimizer.pt", "rng_state.pth",
                   "scheduler.pt", "trainer_state.json", "training_args.bin"])
    bad = ctx.verify([k for k in ctx.expected if k.startswith(out + "/")])
    ctx.check("s3_remaining_checkpoints_exact", not bad and files == want,
              "; ".join(bad) + f" files {files}")
    # The older remaining checkpoint is still a delta after the rotations, and loads exactly.
    probs = [ctx.delta(f"s3 hf {f} (after rotation)", f"{older}/{f}", f"{newest}/{f}")
             for f in ("model.safetensors", "optimizer.pt")]
    probs = [p for p in probs if p]
    ctx.check("s3_older_checkpoint_still_delta_after_rotation", not probs, "; ".join(probs))
    d = deep_diff(torch, keep[f"{older}/optimizer.pt"], torch.load(ctx.p(f"{older}/optimizer.pt")))
    with open(ctx.p(f"{newest}/trainer_state.json")) as f:
        st = json.load(f)
    ctx.check("s3_load_older_optimizer_and_trainer_state", not d and st["global_step"] == total
              and len(st["log_history"]) == total, "; ".join(d))


# ------------------------------------------------------------------------ s4: Lightning

def s4_lightning(ctx):
    torch = ctx.torch
    d = "lightning/checkpoints"
    os.makedirs(ctx.p(d))
    seed_all(torch, 4)
    model = make_mlp(torch, 41)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xa, ya = make_data(torch, 42, n=5120)
    x, y, xv, yv = xa[:4096], ya[:4096], xa[4096:], ya[4096:]    # train / validation split
    top_k, best_k = 2, {}         # rel -> val_loss of the kept top-k files
    step, meta_bad, link_bad, deltas, saved = 0, [], [], [], []
    tmp_dev = None
    epochs, steps_per_epoch = 5, 8
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            mlp_step(torch, model, opt, x, y)
            step += 1
        model.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.cross_entropy(model(xv), yv))
        name = f"epoch={epoch}-step={step}.ckpt"
        rel = f"{d}/{name}"
        # ModelCheckpoint.check_monitor_top_k: save only if among the best k so far.
        worst = max(best_k, key=best_k.get) if best_k else None
        if len(best_k) >= top_k and not val < best_k[worst]:
            print(f"  epoch {epoch}: val_loss {val:.5f} not in the top {top_k}: not saved",
                  flush=True)
            continue
        ckpt = {"epoch": epoch, "global_step": step, "pytorch-lightning_version": "2.4.0",
                "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": epoch}}}},
                "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                    "monitor": "val_loss", "best_model_score": torch.tensor(val),
                    "best_model_path": ctx.p(rel), "current_score": torch.tensor(val),
                    "dirpath": ctx.p(d), "best_k_models": {ctx.p(k): torch.tensor(v)
                                                           for k, v in best_k.items()},
                    "last_model_path": ctx.p(f"{d}/last.ckpt")}},
                "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
                "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-4}}
        # cloud_io._atomic_save (<= 2.6): torch.save into a BytesIO, one write into a
        # mkstemp file in $TMPDIR, then shutil.move into place (cross-device: copy2 + unlink).
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        data = buf.getvalue()
        fd, tmp = tempfile.mkstemp()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # A distinctive mtime (ns) so the check sees copy2 carry it, not just "now".
        os.utime(tmp, ns=(1_600_000_000_123_456_789 + epoch, 1_600_000_000_123_456_789 + epoch))
        st_tmp = os.stat(tmp)
        tmp_dev = st_tmp.st_dev
        shutil.move(tmp, ctx.p(rel))
        with open(ctx.sp(rel), "wb") as f:
            f.write(data)
        ctx.record(rel, hashlib.sha256(data).hexdigest(), len(data))
        st = os.stat(ctx.p(rel))
        if os.path.exists(tmp):
            meta_bad.append(f"{tmp} still exists after shutil.move")
        if stat.S_IMODE(st.st_mode) != stat.S_IMODE(st_tmp.st_mode) \
                or st.st_mtime_ns != st_tmp.st_mtime_ns or st.st_size != len(data):
            meta_bad.append(f"{name}: mode {oct(st.st_mode)} mtime {st.st_mtime_ns} size "
                            f"{st.st_size}; the temp file had {oct(st_tmp.st_mode)} "
                            f"{st_tmp.st_mtime_ns} {len(data)}")
        # The previously saved checkpoint (if still kept) becomes a delta against this one.
        if saved and saved[-1] in best_k:
            deltas.append(ctx.delta("s4 lightning epoch=#-step=#.ckpt", saved[-1], rel))
        saved.append(rel)
        # save_top_k: the worst of k+1 goes with os.remove (fs.rm on a local path).
        best_k[rel] = val
        if len(best_k) > top_k:
            worst = max(best_k, key=best_k.get)
            del best_k[worst]
            os.remove(ctx.p(worst))
            ctx.forget(worst)
        # save_last="link": last.ckpt -> the newest saved, replaced atomically.
        tmp_link = ctx.p(f"{d}/.last.ckpt.tmp{epoch}")
        os.symlink(name, tmp_link)
        os.replace(tmp_link, ctx.p(f"{d}/last.ckpt"))
        ctx.links[f"{d}/last.ckpt"] = name
        try:
            target = os.readlink(ctx.p(f"{d}/last.ckpt"))
            via = sha_file(ctx.p(f"{d}/last.ckpt"))
            if target != name or via != ctx.expected[rel] \
                    or not stat.S_ISLNK(os.lstat(ctx.p(f"{d}/last.ckpt")).st_mode):
                link_bad.append(f"epoch {epoch}: last.ckpt -> {target!r}, content ok "
                                f"{via == ctx.expected[rel]}")
        except OSError as e:
            link_bad.append(f"epoch {epoch}: {e}")
    print(f"  saved {len(saved)}; kept (top-{top_k} by val_loss): {sorted(best_k)}", flush=True)
    ctx.check("s4_moved_cross_device", tmp_dev is not None and tmp_dev != os.stat(ctx.mnt).st_dev,
              f"temp dev {tmp_dev}, mount dev {os.stat(ctx.mnt).st_dev}")
    ctx.check("s4_copy2_keeps_mode_mtime_size", not meta_bad, "; ".join(meta_bad))
    ctx.check("s4_last_ckpt_symlink_replaced", not link_bad and saved, "; ".join(link_bad))
    listing = sorted(os.listdir(ctx.p(d)))
    want = sorted([os.path.basename(k) for k in best_k] + ["last.ckpt"])
    bad = ctx.verify([k for k in ctx.expected if k.startswith("lightning/")])
    ctx.check("s4_top_k_files_exact_and_removed_gone", not bad and listing == want,
              f"listing {listing}, expected {want}; " + "; ".join(bad))
    deltas = [p for p in deltas if p]
    n = len(ctx.ratios.get("s4 lightning epoch=#-step=#.ckpt", []))
    ctx.check("s4_chain_delta_encoded", not deltas and n >= 3,
              f"{n} deltas checked (val_loss must improve for files to be saved); "
              + "; ".join(deltas))
    last = torch.load(ctx.p(f"{d}/last.ckpt"))
    want_sd = torch.load(ctx.p(saved[-1]))["state_dict"] if saved else {}
    dd = deep_diff(torch, want_sd, last["state_dict"])
    ctx.check("s4_load_last_ckpt_exact", not dd and saved and ctx.p(saved[-1]) == last[
        "callbacks"]["ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"]["best_model_path"],
        "; ".join(dd))


# ------------------------------------------------------------------------ s5: DeepSpeed

def ds_rank(rank, root, shadow, steps, every, barrier, q):
    """One DeepSpeed rank: its own model-parallel shard of weights (own seed), torch.save of
    its model states into global_stepN/ at the same time as the other ranks."""
    try:
        torch = torch_setup(1)
        seed_all(torch, 50 + rank)
        model = make_mlp(torch, 500 + rank)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, y = make_data(torch, 510 + rank)
        for step in range(1, steps + 1):
            mlp_step(torch, model, opt, x, y)
            if step % every:
                continue
            tag = f"global_step{step}"
            os.makedirs(os.path.join(root, tag), exist_ok=True)
            state = {"module": model.state_dict(), "buffer_names": [], "optimizer": None,
                     "param_shapes": [{k: v.shape for k, v in model.state_dict().items()}],
                     "lr_scheduler": None, "global_steps": step, "global_samples": step * 64,
                     "dp_world_size": 1, "mp_world_size": 4, "ds_version": "0.14.0"}
            name = f"{tag}/mp_rank_{rank:02d}_model_states.pt"
            barrier.wait(60)                    # all ranks write at once
            torch.save(state, os.path.join(root, name))
            sh = os.path.join(shadow, name)
            os.makedirs(os.path.dirname(sh), exist_ok=True)
            torch.save(state, sh)
            q.put(("file", name) + sha_file(sh))
            barrier.wait(60)                    # save done everywhere
            if rank == 0:
                # engine.save_checkpoint: rank 0 writes `latest` in place, no rename.
                p = os.path.join(root, "latest")
                if step // every % 2 and os.path.exists(p):
                    with open(p, "r+") as f:
                        f.seek(0)
                        f.write(tag)
                        f.truncate()
                else:
                    with open(p, "w") as f:
                        f.write(tag)
                with open(p) as f:
                    q.put(("latest", tag, f.read()))
            barrier.wait(60)
        q.put(("done", rank))
    except Exception as e:
        report_rank_failure(q, rank, barrier, e)


def report_rank_failure(q, rank, barrier, e):
    """A rank process failed: tell the parent, and release the other ranks from the barrier."""
    q.put(("error", rank, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
    try:
        barrier.abort()
    except Exception:
        pass


def run_ranks(target, nranks, args, timeout=120):
    """Starts `nranks` spawned processes target(rank, *args, barrier, queue); collects the
    queue's messages until each rank said done or error."""
    mpc = multiprocessing.get_context("spawn")
    barrier, q = mpc.Barrier(nranks), mpc.Queue()
    procs = [mpc.Process(target=target, args=(r, *args, barrier, q)) for r in range(nranks)]
    for p in procs:
        p.start()
    msgs, finished = [], 0
    deadline = time.monotonic() + timeout
    try:
        while finished < nranks and time.monotonic() < deadline:
            try:
                m = q.get(timeout=1)
            except Exception:
                if not any(p.is_alive() for p in procs) and q.empty():
                    break
                continue
            msgs.append(m)
            if m[0] in ("done", "error"):
                finished += 1
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    return msgs, [p.exitcode for p in procs]


def check_ranks_finished(ctx, name, msgs, codes, nranks, expected_files):
    """All `nranks` ranks exited 0 without an error and reported `expected_files` files
    (returned)."""
    errors = [m[2] for m in msgs if m[0] == "error"]
    files = [m for m in msgs if m[0] == "file"]
    ctx.check(name, not errors and codes == [0] * nranks and len(files) == expected_files,
              f"exit codes {codes}; {errors}")
    return files


def s5_deepspeed(ctx):
    root = ctx.p("ds")
    os.makedirs(root)
    nranks, steps, every = 4, 15, 5
    msgs, codes = run_ranks(ds_rank, nranks, (root, os.path.join(ctx.shadow, "ds"), steps,
                                              every))
    files = check_ranks_finished(ctx, "s5_ranks_finished", msgs, codes, nranks,
                                 nranks * steps // every)
    for _, name, sha, n in files:
        ctx.record(f"ds/{name}", sha, n)
    latest = [m for m in msgs if m[0] == "latest"]
    bad_latest = [f"wrote {t!r}, read {r!r}" for _, t, r in latest if t != r]
    if latest:
        final = latest[-1][1].encode()
        ctx.record("ds/latest", hashlib.sha256(final).hexdigest(), len(final))
        with open(ctx.sp("ds/latest"), "wb") as f:
            f.write(final)
    ctx.check("s5_latest_rewritten_in_place", len(latest) == steps // every and not bad_latest
              and open(os.path.join(root, "latest")).read() == f"global_step{steps}",
              f"{len(latest)} rewrites; {bad_latest}")
    bad = ctx.verify([k for k in ctx.expected if k.startswith("ds/")])
    listing = sorted(os.listdir(root))
    ctx.check("s5_all_rank_files_exact", not bad and listing == sorted(
        ["latest"] + [f"global_step{s}" for s in range(every, steps + 1, every)]),
        f"{listing}; " + "; ".join(bad))
    probs = []
    settle(ctx.mnt)     # all re-encoding done: then each parent is read without a long wait
    for s in range(every, steps, every):
        for r in range(nranks):
            probs.append(ctx.delta("s5 deepspeed mp_rank_#_model_states.pt",
                                   f"ds/global_step{s}/mp_rank_{r:02d}_model_states.pt",
                                   f"ds/global_step{s + every}/mp_rank_{r:02d}_model_states.pt",
                                   idle_for=0.5))
    probs = [p for p in probs if p]
    ctx.check("s5_per_rank_chains_delta_encoded", not probs, "; ".join(probs))


# ------------------------------------------------------------------------------ s6: DCP

class TeeWriter:
    """A file object passing every write to the real file and to a hash (the bytes as
    written), for torch.save(obj, file_object)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def dcp_rank(rank, root, shadow, steps, every, barrier, q):
    """One FSDP-like rank: the same model everywhere, each rank saves its row shard of every
    parameter as DCP does: items largest first, each a complete torch.save blob."""
    try:
        torch = torch_setup(1)
        nranks = barrier.parties
        seed_all(torch, 6)
        model = make_mlp(torch, 61)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, y = make_data(torch, 62)
        for step in range(1, steps + 1):
            mlp_step(torch, model, opt, x, y)
            if step % every:
                continue
            ck = os.path.join(root, f"step_{step}")
            os.makedirs(ck, exist_ok=True)
            items = []
            for k, v in model.state_dict().items():
                rows = v.shape[0]
                lo, hi = rows * rank // nranks, rows * (rank + 1) // nranks
                items.append((k, lo, v[lo:hi].clone()))
            items.sort(key=lambda i: -i[2].numel())
            name = f"__{rank}_0.distcp"
            barrier.wait(60)
            storage = []
            with open(os.path.join(ck, name), "wb") as f:
                tee = TeeWriter(f)
                for k, lo, t in items:
                    off = tee.n
                    torch.save(t, tee)
                    storage.append((k, lo, tuple(t.shape), name, off, tee.n - off))
                f.flush()
                os.fsync(f.fileno())
            sh = os.path.join(shadow, f"step_{step}", name)
            os.makedirs(os.path.dirname(sh), exist_ok=True)
            with open(sh, "wb") as f:
                for k, lo, t in items:
                    torch.save(t, f)
            full = {k: hashlib.sha256(tensor_bytes(torch, v)).hexdigest()
                    for k, v in model.state_dict().items()} if rank == 0 else None
            q.put(("file", f"step_{step}/{name}", tee.h.hexdigest(), tee.n, storage, full))
            barrier.wait(60)
        q.put(("done", rank))
    except Exception as e:
        report_rank_failure(q, rank, barrier, e)


def s6_dcp(ctx):
    torch = ctx.torch
    root = ctx.p("dcp")
    os.makedirs(root)
    nranks, steps, every = 4, 20, 10
    msgs, codes = run_ranks(dcp_rank, nranks, (root, os.path.join(ctx.shadow, "dcp"), steps,
                                               every))
    files = check_ranks_finished(ctx, "s6_ranks_finished", msgs, codes, nranks,
                                 nranks * steps // every)
    load_bad, meta_bad = [], []
    for step in range(every, steps + 1, every):
        ck = f"dcp/step_{step}"
        mine = [m for m in files if m[1].startswith(f"step_{step}/")]
        for _, name, sha, n, _, _ in mine:
            ctx.record(f"dcp/{name}", sha, n)
        # finish() on the coordinator: .metadata.tmp, fsync, unlink old, rename.
        metadata = {"storage_data": {}, "state_dict_metadata": {}}
        for m in sorted(mine, key=lambda m: m[1]):
            for k, lo, shape, fname, off, ln in m[4]:
                metadata["storage_data"][(k, lo)] = (fname, off, ln)
                metadata["state_dict_metadata"].setdefault(k, []).append((lo, shape))
        for chunks in metadata["state_dict_metadata"].values():
            chunks.sort()
        blob = pickle.dumps(metadata, protocol=4)
        tmpf = ctx.p(f"{ck}/.metadata.tmp")
        with open(tmpf, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(ctx.p(f"{ck}/.metadata")):
            os.unlink(ctx.p(f"{ck}/.metadata"))
        os.rename(tmpf, ctx.p(f"{ck}/.metadata"))
        with open(ctx.sp(f"{ck}/.metadata"), "wb") as f:
            f.write(blob)
        ctx.record(f"{ck}/.metadata", hashlib.sha256(blob).hexdigest(), len(blob))
        names = sorted(os.listdir(ctx.p(ck)))
        want = sorted([".metadata"] + [f"__{r}_0.distcp" for r in range(nranks)])
        if names != want:
            meta_bad.append(f"{ck}: {names}")
        # DCP-style load: read .metadata, then seek/read each item's slice, torch.load it.
        full = next((m[5] for m in mine if m[5]), {})
        with open(ctx.p(f"{ck}/.metadata"), "rb") as f:
            md = pickle.load(f)
        for k, chunks in md["state_dict_metadata"].items():
            parts = []
            for lo, shape in chunks:
                fname, off, ln = md["storage_data"][(k, lo)]
                with open(ctx.p(f"{ck}/{fname}"), "rb") as f:
                    f.seek(off)
                    parts.append(torch.load(io.BytesIO(f.read(ln))))
            t = torch.cat(parts)
            if hashlib.sha256(tensor_bytes(torch, t)).hexdigest() != full.get(k):
                load_bad.append(f"{ck} {k}")
    ctx.check("s6_metadata_renamed_into_place", not meta_bad, "; ".join(meta_bad))
    bad = ctx.verify([k for k in ctx.expected if k.startswith("dcp/")])
    ctx.check("s6_distcp_and_metadata_exact", not bad, "; ".join(bad))
    ctx.check("s6_dcp_style_load_exact", not load_bad and files, "; ".join(load_bad))
    settle(ctx.mnt)
    for r in range(nranks):    # reported, not asserted (the shards are rows of one model)
        ctx.delta("s6 dcp __#_0.distcp (not asserted)", f"dcp/step_{every}/__{r}_0.distcp",
                  f"dcp/step_{2 * every}/__{r}_0.distcp", idle_for=0.5)


# --------------------------------------------------------------------------- s7: mmap

def s7_mmap(ctx, keep):
    torch = ctx.torch
    import numpy as np
    sts = sorted((k for k in keep if k.endswith(".safetensors") and k in ctx.expected),
                 key=lambda k: int(re.search(r"checkpoint-(\d+)", k).group(1)))
    if not sts:
        ctx.check("s7_have_safetensors", False, "s3 left no safetensors files (run s3 first)")
        return

    def tensors_from(buf, rel):
        header, start = safetensors_parse(buf)
        bad = []
        want = keep[rel]
        names = sorted(k for k in header if k != "__metadata__")
        if names != sorted(want):
            bad.append(f"{rel}: tensor names differ")
        for k in names:
            e = header[k]
            b, en = e["data_offsets"]
            arr = np.frombuffer(buf, dtype=ST_NUMPY[e["dtype"]], count=(en - b) //
                                np.dtype(ST_NUMPY[e["dtype"]]).itemsize, offset=start + b)
            t = torch.from_numpy(arr.copy()).reshape(e["shape"])
            if k in want and deep_diff(torch, want[k], t):
                bad.append(f"{rel}: {k} differs")
        return bad

    for how in ("MAP_SHARED", "MAP_PRIVATE"):
        bad = []
        for rel in sts:
            with open(ctx.p(rel), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, flags=getattr(mmap, how), prot=mmap.PROT_READ)
                try:
                    if hashlib.sha256(mm).hexdigest() != ctx.expected[rel][0]:
                        bad.append(f"{rel}: mapped bytes differ")
                    bad += tensors_from(mm, rel)
                finally:
                    mm.close()
        ctx.check(f"s7_mmap_{how.lower()}_tensors_exact", not bad,
                  f"{sts}: " + "; ".join(bad))
    bad = []
    for rel in sts:
        mm = np.memmap(ctx.p(rel), dtype=np.uint8, mode="r")
        if hashlib.sha256(mm.tobytes()).hexdigest() != ctx.expected[rel][0]:
            bad.append(f"{rel}: numpy.memmap bytes differ")
        bad += tensors_from(mm, rel)
        del mm
    ctx.check("s7_numpy_memmap_tensors_exact", not bad, "; ".join(bad))
    print(f"  mapped {sts} (the older is a delta: parent "
          f"{tpde_xattr(ctx.p(sts[0]), 'parent')!r})", flush=True)


# ----------------------------------------------------------------- s8: standard tools

def tree(root):
    """rel -> ('f', sha, size, mode, mtime_s) | ('l', target) | ('d', mode) for a tree."""
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("f",) + sha_file(p) + (stat.S_IMODE(st.st_mode), int(st.st_mtime))
    return out


def tree_diff(a, b, limit=8):
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: {a.get(k)} vs {b.get(k)}")
            if len(out) >= limit:
                break
    return out


def s8_tools(ctx, work):
    settle(ctx.mnt)
    src = tree(ctx.mnt)
    # The mount itself holds exactly what was written.
    want = {k: v for k, v in ctx.expected.items()}
    files = {k: (v[1], v[2]) for k, v in src.items() if v[0] == "f"}
    diffs = [f"{k}: {files.get(k)} vs {want.get(k)}" for k in sorted(set(files) | set(want))
             if files.get(k) != want.get(k)]
    diffs += [f"{k} -> {src.get(k)}" for k, t in ctx.links.items() if src.get(k) != ("l", t)]
    ctx.check("s8_mount_tree_is_what_was_written", not diffs,
              f"{len(diffs)} differences: {diffs[:6]}")
    # ls -l: sizes equal the written sizes.
    bad = []
    for dp, dns, fns in os.walk(ctx.mnt):
        r = subprocess.run(["ls", "-ln", "--time-style=+%s", "--quoting-style=literal", dp],
                           capture_output=True, text=True, timeout=60)
        for line in r.stdout.splitlines()[1:]:
            f = line.split(None, 6)
            if len(f) < 7:
                continue
            name = f[6].split(" -> ")[0]
            rel = os.path.relpath(os.path.join(dp, name), ctx.mnt)
            if f[0].startswith("-") and int(f[4]) != ctx.expected.get(rel, (None, -1))[1]:
                bad.append(f"{rel}: ls size {f[4]}, written {ctx.expected.get(rel)}")
            if f[0].startswith("l") and int(f[4]) != len(ctx.links.get(rel, "")):
                bad.append(f"{rel}: symlink size {f[4]}")
        if r.returncode:
            bad.append(f"ls {dp}: exit {r.returncode} {r.stderr[-300:]}")
    ctx.check("s8_ls_l_sizes_equal_written", not bad and len(files) > 20, "; ".join(bad[:6]))

    def copy_check(name, cmd, dst, cwd=None):
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, shell=True,
                           cwd=cwd)
        got = tree(dst) if os.path.isdir(dst) else {}
        d = tree_diff(src, got)
        ctx.check(f"s8_{name}_identical", r.returncode == 0 and not r.stderr.strip() and not d,
                  f"exit {r.returncode}, stderr {r.stderr[-500:]!r}; {d}")
        print(f"  {name}: {time.monotonic() - t0:.1f} s", flush=True)
        return r

    q = lambda s: "'" + s.replace("'", "'\\''") + "'"  # noqa: E731
    copy_check("cp_a", f"cp -a {q(ctx.mnt)}/. {q(work)}/cp", os.path.join(work, "cp"))
    r = subprocess.run(["diff", "-r", "--no-dereference", ctx.mnt, os.path.join(work, "cp")],
                       capture_output=True, text=True, timeout=120)
    ctx.check("s8_diff_r_mount_vs_cp_copy", r.returncode == 0, r.stdout[-500:] + r.stderr[-300:])
    if shutil.which("rsync"):
        copy_check("rsync_a", f"rsync -a {q(ctx.mnt)}/ {q(work)}/rsync/",
                   os.path.join(work, "rsync"))
    else:
        ctx.res.skip_one("s8_rsync_a_identical", "rsync is not installed")
    os.makedirs(os.path.join(work, "tar"))
    copy_check("tar", f"tar cf - -C {q(ctx.mnt)} . | tar xf - -C {q(work)}/tar",
               os.path.join(work, "tar"))
    # du: stored size below the apparent size once deltas exist.
    du = subprocess.run(["du", "-s", "--block-size=1", ctx.mnt], capture_output=True,
                        text=True, timeout=60)
    dua = subprocess.run(["du", "-s", "--apparent-size", "--block-size=1", ctx.mnt],
                         capture_output=True, text=True, timeout=60)
    try:
        used, apparent = int(du.stdout.split()[0]), int(dua.stdout.split()[0])
    except (ValueError, IndexError):
        used = apparent = None
    stored = store_stats(ctx.mnt)["stored_bytes"]
    logical = sum(v[1] for v in ctx.expected.values())
    note = f"du {used} of apparent {apparent} (written {logical}, stats stored {stored})"
    print(f"  {note}", flush=True)
    ctx.check("s8_du_shows_stored_size", used is not None and used < apparent
              and apparent >= logical and used <= 1.1 * stored + 4096 * len(src), note)


# ------------------------------------------------------------------------------- driver

def torch_save_deterministic(torch, base):
    """The hashing scheme's premise: two torch.save of one object to paths with the same
    file name give the same bytes."""
    model = make_mlp(torch, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = make_data(torch, 2, n=256)
    seed_all(torch, 0)
    mlp_step(torch, model, opt, x, y)
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(torch)}
    a, b = os.path.join(base, "a"), os.path.join(base, "b")
    os.makedirs(a)
    os.makedirs(b)
    torch.save(obj, os.path.join(a, "x.pt"))
    torch.save(obj, os.path.join(b, "x.pt"))
    return sha_file(os.path.join(a, "x.pt")) == sha_file(os.path.join(b, "x.pt"))


def print_ratios(ctxs):
    print("ratios (logical/stored) of older versions, and how many have the expected parent:")
    for ctx in ctxs:
        for label, rows in ctx.ratios.items():
            rs = [r for _, r, _ in rows]
            if rs:
                tail = "" if label.startswith("newest") else (
                    f"; expected parent {sum(1 for *_, ok in rows if ok)}/{len(rs)}")
                print(f"  {label}: n={len(rs)} min {min(rs):.3f} max {max(rs):.3f} "
                      f"mean {sum(rs) / len(rs):.3f}{tail}")


def newest_ratios(ctx, label, rels):
    rows = []
    for rel in rels:
        try:
            rows.append((rel, float(tpde_xattr(ctx.p(rel), "ratio")), True))
        except (OSError, ValueError):
            pass
    if rows:
        ctx.ratios[label] = rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")),
                ALL_SCENARIOS)
    keep_tmp = "--keep" in sys.argv
    if not args:
        print(__doc__)
        sys.exit(2)
    tpdefs = args[0]
    res = Results("e2e", args[1] if len(args) > 1 else None)
    # As require_mount, with the torch check between: without torch the suite skips even when
    # the binary is missing.
    why = skip_reason()
    if why:
        res.skip(why)
    try:
        torch = torch_setup(1)
        __import__("numpy")
    except Exception as e:
        res.skip(f"cannot import torch/numpy ({type(e).__name__}: {e}); "
                 "Debian: python3-torch python3-numpy")
    require_mount(res, tpdefs)
    t_start = time.monotonic()
    base = tempfile.mkdtemp(prefix="tpdefs-e2e-")
    ctxs = []
    try:
        res.check("torch_save_deterministic", torch_save_deterministic(torch, os.path.join(
            base, "det")), "torch.save of one object twice gave different bytes: the test's "
                           "hashing scheme does not hold")
        if "s2" in only:
            run_resume_mount(res, tpdefs, base, torch, ctxs)
        rest = [s for s in only if s != "s2"]
        if rest:
            run_shared_mount(res, tpdefs, base, torch, ctxs, rest)
    except Exception as e:
        res.check("run", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}")
    finally:
        if keep_tmp:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print_ratios(ctxs)
    print(f"total {time.monotonic() - t_start:.1f} s")
    res.finish()


def unmount_checks(res, m, label):
    res.check(f"{label}_clean_unmount", m.returncode == 0 and not m.teardown_notes
              and not m.watchdog_fired, f"daemon exit {m.returncode}; teardown "
              f"{m.teardown_notes}; watchdog {m.watchdog_fired}; log tail:\n{m.final_log[-2000:]}")


def run_resume_mount(res, tpdefs, base, torch, ctxs):
    work = os.path.join(base, "s2")
    os.makedirs(os.path.join(work, "plain"))
    try:
        with mounted(tpdefs, base=base, watchdog=MOUNT_WATCHDOG) as m:
            ctx = Ctx(res, m, os.path.join(work, "shadow"), torch)
            ctxs.append(ctx)
            run_scenario(ctx, "s2", s2_resume, os.path.join(work, "plain"))
        unmount_checks(res, m, "s2")
    except MountError as e:
        res.check("s2_mount", False, str(e))


def run_shared_mount(res, tpdefs, base, torch, ctxs, only):
    work = os.path.join(base, "shared")
    os.makedirs(work)
    store = None
    ctx = None
    try:
        with mounted(tpdefs, base=base, keep_store=True, watchdog=MOUNT_WATCHDOG) as m:
            store = m.store
            ctx = Ctx(res, m, os.path.join(work, "shadow"), torch)
            ctxs.append(ctx)
            keep = {}
            steps = [("s1", s1_torch_save_load, ()), ("s3", s3_hf_trainer, (keep,)),
                     ("s4", s4_lightning, ()), ("s5", s5_deepspeed, ()), ("s6", s6_dcp, ()),
                     ("s7", s7_mmap, (keep,)), ("s8", s8_tools, (work,))]
            for name, fn, extra in steps:
                if name in only:
                    run_scenario(ctx, name, fn, *extra)
            if m.alive():
                newest_ratios(ctx, "newest files (standalone, not asserted)",
                              [r for r in ("run/step-30.pt", "hf/checkpoint-50/model.safetensors",
                                           "hf/checkpoint-50/optimizer.pt",
                                           "ds/global_step15/mp_rank_00_model_states.pt")
                               if r in ctx.expected])
                bad = ctx.verify()
                res.check("all_files_exact_at_end", not bad and ctx.expected,
                          f"{len(bad)} of {len(ctx.expected)} files: " + "; ".join(bad[:6]))
        unmount_checks(res, m, "shared")
    except MountError as e:
        res.check("shared_mount", False, str(e))
        return
    if store is None or ctx is None:
        return
    try:
        with mounted(tpdefs, store_dir=store, base=base, watchdog=MOUNT_WATCHDOG) as m2:
            bad = ctx.verify(root=m2.mnt)
            links = [k for k, t in ctx.links.items()
                     if not os.path.islink(os.path.join(m2.mnt, k))
                     or os.readlink(os.path.join(m2.mnt, k)) != t]
            res.check("remount_all_files_exact", not bad and not links,
                      f"{len(bad)} of {len(ctx.expected)} files: {bad[:6]}; links {links}")
        unmount_checks(res, m2, "remount")
    except MountError as e:
        res.check("remount", False, str(e))
    finally:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker-train":
        worker_train(sys.argv[2:])
    else:
        main()

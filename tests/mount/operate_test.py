#!/usr/bin/python3
"""Operating a real tpdefs mount like any other filesystem:

- mounting mistakes: a mount point that is already mounted (another tpdefs, a tmpfs) or a
  directory that is not empty is refused with a message saying so, and -o nonempty mounts
  anyway; a refused mount creates no store;
- readiness: the detached daemon's parent returns only once the mount answers;
- attributes: `getfattr -d -m -` lists and shows every user.tpde.* attribute of a file and
  the root's, changed_fraction is a fraction (and sparsity reads the same, unlisted);
- `tpde stats MOUNTPOINT` for a person, --json (the root's user.tpde.stats), --prometheus
  (parsed with prometheus_client when installed), --wait-idle (returns with nothing pending;
  with --timeout it gives up on a daemon that does not answer, SIGSTOPped), and `tpde stats
  PREV NEW` on two files still works;
- logs: -o log_file=, -o log_level=debug shows debug lines, -o log_level=warn hides info;
  detached, the daemon logs to syslog (a /dev/log of the test's, in a private namespace);
- -o noexec reaches the kernel mount;
- the README's PyTorch example runs on a mount as written (python3-torch);
- /dev/fuse missing (a private mount namespace with an empty /dev): the message says it is
  missing and how to load the module, exit 1, and the new store is not left behind.

Usage: operate_test.py TPDEFS [RESULTS_DIR]; results in RESULTS_DIR/mount_operate.count.
Exits 77 (skip) without /dev/fuse, fusermount3 or root.
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mount_util import (Results, is_mounted, mounted, require_mount, _mount_fstype,
                        _fusermount)

TPDEFS = os.path.abspath(sys.argv[1])
TPDE = os.path.join(os.path.dirname(TPDEFS), "tpde")
res = Results("mount_operate", sys.argv[2] if len(sys.argv) > 2 else None)
require_mount(res, TPDEFS)
BASE = tempfile.mkdtemp(prefix="tpdefs-operate-")


def run(*cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def mountinfo_options(path):
    """The per-mount options (rw,nosuid,...) of the topmost mount at `path`."""
    found = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5 and fields[4] == path:
                found = fields[5]
    return found


def wait_released(store, timeout=20):
    """True once a daemon that served `store` has let it go (tpde can open it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(TPDE, "ls", store).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def npy_f32(data):
    """`data` (a multiple of 4 bytes) as a .npy file of float32: typed elements."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % (len(data) // 4)
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def mounting_mistakes():
    with mounted(TPDEFS, base=BASE) as m:
        store2 = os.path.join(BASE, "second-store")
        r = run(TPDEFS, store2, m.mnt)
        res.check("refuse_over_tpdefs_mount",
                  r.returncode == 1 and "already a mount point" in r.stderr and
                  "fuse.tpdefs" in r.stderr and "nonempty" in r.stderr,
                  f"rc {r.returncode}: {r.stderr.strip()}")
        res.check("refused_mount_creates_no_store", not os.path.exists(store2), store2)
        # With -o nonempty it stacks; unmount the top one, the first is still there.
        r = run(TPDEFS, store2, m.mnt, "-o", "nonempty")
        top = _mount_fstype(m.mnt)
        res.check("nonempty_mounts_over_a_mount", r.returncode == 0 and top == "fuse.tpdefs",
                  f"rc {r.returncode}: {r.stderr.strip()}")
        if r.returncode == 0:
            ok, err = _fusermount(["-u"], m.mnt)
            res.check("stacked_mount_unmounts", ok and is_mounted(m.mnt), err)
            res.check("stacked_daemon_exits", wait_released(store2))
    tmp = os.path.join(BASE, "tmpfs")
    os.makedirs(tmp)
    r = run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp)
    if r.returncode == 0:
        try:
            r = run(TPDEFS, os.path.join(BASE, "store3"), tmp)
            res.check("refuse_over_tmpfs", r.returncode == 1 and "already a mount point (tmpfs"
                      in r.stderr, f"rc {r.returncode}: {r.stderr.strip()}")
        finally:
            run("umount", tmp)
    else:
        res.skip_one("refuse_over_tmpfs", f"cannot mount a tmpfs: {r.stderr.strip()}")
    full = os.path.join(BASE, "full")
    os.makedirs(full)
    open(os.path.join(full, "checkpoint-500"), "w").close()
    r = run(TPDEFS, os.path.join(BASE, "store4"), full)
    res.check("refuse_non_empty_dir", r.returncode == 1 and "is not empty" in r.stderr and
              "checkpoint-500" in r.stderr, f"rc {r.returncode}: {r.stderr.strip()}")
    res.check("refused_non_empty_creates_no_store",
              not os.path.exists(os.path.join(BASE, "store4")))


def readiness():
    store = os.path.join(BASE, "ready-store")
    mnt = os.path.join(BASE, "ready-mnt")
    os.makedirs(mnt)
    t = time.monotonic()
    r = run(TPDEFS, store, mnt, "-o", "cache_mib=64")
    try:
        served = r.returncode == 0 and is_mounted(mnt)
        if served:
            st = os.statvfs(mnt)       # answered at once: the parent returned after the probe
            served = st.f_bsize > 0
        res.check("detached_parent_returns_when_mount_answers", served,
                  f"rc {r.returncode} after {time.monotonic() - t:.2f} s: {r.stderr.strip()}")
    finally:
        _fusermount(["-u"], mnt)
    res.check("detached_daemon_exits_after_unmount", wait_released(store))


def attributes_and_stats():
    with mounted(TPDEFS, base=BASE, opts=["-o", "cache_mib=64,noexec"], watchdog=120) as m:
        res.check("noexec_reaches_the_kernel", "noexec" in mountinfo_options(m.mnt).split(","),
                  mountinfo_options(m.mnt))
        # Two versions of one chain: float32 weights, one element in 1024 changed.
        import random
        rnd = random.Random(7)
        weights = bytearray(rnd.randbytes(4 << 20))
        paths = []
        for step in (1, 2):
            for i in range(0, len(weights), 4096):
                weights[i] ^= 1
            d = os.path.join(m.mnt, f"checkpoint-{step}")
            os.mkdir(d)
            p = os.path.join(d, "weights.npy")
            base = npy_f32(bytes(weights))
            with open(p, "wb") as f:
                f.write(base)
            paths.append(p)
        r = run(TPDE, "stats", "--wait-idle", "--timeout", "60", "--json", m.mnt)
        try:
            j = json.loads(r.stdout)
        except ValueError:
            j = {}
        res.check("wait_idle_returns_idle", r.returncode == 0 and
                  j.get("maintenance_pending") == 0 and
                  os.getxattr(m.mnt, "user.tpde.maintenance_pending") == b"0",
                  f"rc {r.returncode}: {r.stderr.strip()} {r.stdout[:200]}")
        res.check("stats_json_is_the_root_attribute",
                  set(json.loads(os.getxattr(m.mnt, "user.tpde.stats"))) == set(j) and
                  j.get("files") == 2 and j.get("logical_bytes") == 2 * len(base),
                  f"{sorted(j)}")
        if shutil.which("getfattr"):
            r = run("getfattr", "-d", "-m", "-", paths[0])
            names = set(re.findall(r"^(user\.tpde\.\w+)=", r.stdout, re.M))
            want = {"user.tpde." + n for n in ("logical_size", "stored_size", "ratio", "parent",
                                               "chain", "depth", "version", "changed_fraction")}
            res.check("getfattr_dump_lists_file_attributes", names == want,
                      f"{sorted(names)}; {r.stderr.strip()}")
            vals = dict(re.findall(r'^(user\.tpde\.\w+)="(.*)"$', r.stdout, re.M))
            frac = vals.get("user.tpde.changed_fraction", "")
            res.check("changed_fraction_is_a_fraction",
                      re.fullmatch(r"0\.\d{4}|1\.0000", frac) is not None and float(frac) < 0.5
                      and vals.get("user.tpde.parent") == "checkpoint-2/weights.npy",
                      f"{vals}")
            res.check("sparsity_alias_reads_the_same",
                      os.getxattr(paths[0], "user.tpde.sparsity").decode() == frac)
            r = run("getfattr", "-d", "-m", "-", m.mnt)
            res.check("getfattr_dump_lists_root_attributes",
                      "user.tpde.stats=" in r.stdout and
                      "user.tpde.maintenance_pending=" in r.stdout, r.stdout[:300])
        else:
            for n in ("getfattr_dump_lists_file_attributes", "changed_fraction_is_a_fraction",
                      "sparsity_alias_reads_the_same", "getfattr_dump_lists_root_attributes"):
                res.skip_one(n, "getfattr is not installed (Debian package attr)")
        r = run(TPDE, "stats", m.mnt)
        res.check("stats_text_for_a_person",
                  r.returncode == 0 and re.search(r"files:\s+2 files, 8\.0 MiB", r.stdout) and
                  "hit rate" in r.stdout and "pending" in r.stdout and "ratio" in r.stdout,
                  f"rc {r.returncode}: {r.stdout}{r.stderr}")
        r = run(TPDE, "stats", "--prometheus", m.mnt)
        prom = r.stdout
        lines = [l for l in prom.splitlines() if l and not l.startswith("#")]
        helps = re.findall(r"^# HELP (\S+) ", prom, re.M)
        types = dict(re.findall(r"^# TYPE (\S+) (\w+)$", prom, re.M))
        shape = (r.returncode == 0 and lines and len(helps) == len(lines) == len(types) and
                 all(re.fullmatch(r'tpdefs_[a-z_]+\{mountpoint="[^"]*"\} [0-9.e+]+', l)
                     for l in lines) and
                 all(n.endswith("_total") == (t == "counter") for n, t in types.items()))
        res.check("prometheus_format", shape, prom[:500] + r.stderr)
        try:
            from prometheus_client.parser import text_string_to_metric_families
            fams = {f.name: f for f in text_string_to_metric_families(prom)}
            logical = fams.get("tpdefs_logical_bytes")
            res.check("prometheus_client_parses",
                      logical is not None and logical.samples[0].value == 2 * len(base) and
                      logical.samples[0].labels == {"mountpoint": m.mnt} and
                      ("tpdefs_written_bytes" in fams or "tpdefs_written_bytes_total" in fams),
                      sorted(fams))
        except ImportError:
            res.skip_one("prometheus_client_parses",
                         "python3-prometheus-client is not installed")
        except Exception as e:  # a parse error
            res.check("prometheus_client_parses", False, repr(e))
        # Two files: the codec's statistics, as before.
        r = run(TPDE, "stats", "-q", paths[0], paths[1])
        res.check("stats_prev_new_still_works", r.returncode == 0 and r.stdout.startswith("total"),
                  f"rc {r.returncode}: {r.stdout}{r.stderr}")
        r = run(TPDE, "stats", paths[0])
        res.check("stats_of_a_file_is_refused",
                  r.returncode == 1 and "not the root of a tpdefs mount" in r.stderr,
                  f"rc {r.returncode}: {r.stderr.strip()}")
        # A daemon that does not answer: --timeout still ends the wait.
        m.proc.send_signal(signal.SIGSTOP)
        try:
            t = time.monotonic()
            r = run(TPDE, "stats", "--wait-idle", "--timeout", "1", m.mnt, timeout=30)
            took = time.monotonic() - t
        finally:
            m.proc.send_signal(signal.SIGCONT)
        res.check("wait_idle_timeout_on_a_stopped_daemon",
                  r.returncode == 1 and "--timeout" in r.stderr and took < 10,
                  f"rc {r.returncode} after {took:.1f} s: {r.stderr.strip()}")


def logging():
    logfile = os.path.join(BASE, "debug.log")
    with mounted(TPDEFS, base=BASE, opts=["-o", f"log_file={logfile},log_level=debug"]) as m:
        with open(os.path.join(m.mnt, "f"), "wb") as f:
            f.write(b"x" * 1000)
        os.listdir(m.mnt)
    text = open(logfile).read() if os.path.exists(logfile) else ""
    res.check("log_file_and_debug_level", "[debug]" in text and "mounted" in text, text[-500:])
    res.check("log_file_not_on_stderr", "] mounted" not in m.final_log, m.final_log[-300:])
    with mounted(TPDEFS, base=BASE, opts=["--log-level", "warn"]) as m:
        os.listdir(m.mnt)
    res.check("log_level_warn_hides_info", "[info]" not in m.final_log and
              "[debug]" not in m.final_log, m.final_log[-300:])


def readme_pytorch_example():
    """The README's PyTorch example, copied as a user would, run against a mount."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    readme = open(os.path.join(root, "README.md")).read()
    m = re.search(r"^### PyTorch\n+```python\n(.*?)^```", readme, re.M | re.S)
    if not m:
        res.check("readme_pytorch_example", False, "no ### PyTorch python block in README.md")
        return
    if run("/usr/bin/python3", "-c", "import torch").returncode != 0:
        res.skip_one("readme_pytorch_example", "python3-torch is not installed")
        return
    with mounted(TPDEFS, base=BASE, watchdog=280) as mt:
        code = m.group(1).replace("/mnt/ckpt", mt.mnt)
        r = run("/usr/bin/python3", "-c", code, timeout=270)
        files = sorted(os.listdir(os.path.join(mt.mnt, "run-1"))) if r.returncode == 0 else []
        ratios = [float(os.getxattr(os.path.join(mt.mnt, "run-1", f), "user.tpde.ratio"))
                  for f in files]
        res.check("readme_pytorch_example",
                  files == ["step-100.pt", "step-200.pt", "step-300.pt"] and
                  all(x > 0 for x in ratios),
                  f"rc {r.returncode}: {r.stderr[-500:]}; files {files}; ratios {ratios}")


SYSLOG_SCRIPT = r'''
set -e
W=$1 TPDEFS=$2 TPDE=$3
# This namespace's own /dev, with the devices tpdefs needs and a /dev/log of ours.
mkdir -p "$W/olddev" "$W/mnt"
mount --bind /dev "$W/olddev"
mount -t tmpfs tmpfs /dev
for n in fuse null; do touch /dev/$n; mount --bind "$W/olddev/$n" /dev/$n; done
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
open(sys.argv[1] + ".ready", "w").close()
with open(sys.argv[1], "w") as out:
    while True:
        d = s.recv(65536).decode(errors="replace")
        out.write(d + "\n")
        out.flush()
' "$W/syslog.txt" &
listener=$!
while [ ! -e "$W/syslog.txt.ready" ]; do sleep 0.05; done
"$TPDEFS" "$W/store" "$W/mnt"
ls "$W/mnt" >/dev/null
fusermount3 -u "$W/mnt"
for i in $(seq 100); do "$TPDE" ls "$W/store" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.2
kill $listener
'''


def syslog_when_detached():
    """A detached daemon logs to syslog: a private mount namespace whose /dev/log is ours."""
    if not shutil.which("unshare"):
        res.skip_one("detached_daemon_logs_to_syslog", "unshare (util-linux) is not installed")
        return
    w = os.path.join(BASE, "syslog")
    os.makedirs(w)
    r = run("unshare", "-m", "--propagation", "private", "sh", "-c", SYSLOG_SCRIPT, "sh", w,
            TPDEFS, TPDE, timeout=60)
    text = open(os.path.join(w, "syslog.txt")).read() if os.path.exists(
        os.path.join(w, "syslog.txt")) else ""
    res.check("detached_daemon_logs_to_syslog",
              re.search(r"tpdefs\[\d+\]: .*mounted .* on ", text) is not None and
              "unmounted" in text, f"rc {r.returncode}: {r.stderr.strip()}; syslog: {text[:500]}")


def missing_device():
    if not shutil.which("unshare"):
        res.skip_one("dev_fuse_missing_message", "unshare (util-linux) is not installed")
        return
    store = os.path.join(BASE, "nodev-store")
    mnt = os.path.join(BASE, "nodev-mnt")
    os.makedirs(mnt)
    # A private mount namespace whose /dev is an empty tmpfs: nothing outside is affected.
    script = f'mount -t tmpfs tmpfs /dev && exec "$0" "$@"'
    r = run("unshare", "-m", "--propagation", "private", "sh", "-c", script, TPDEFS, store, mnt)
    if "mount:" in r.stderr and "tpdefs" not in r.stderr:
        res.skip_one("dev_fuse_missing_message", f"cannot hide /dev here: {r.stderr.strip()}")
        return
    res.check("dev_fuse_missing_message",
              r.returncode == 1 and "/dev/fuse is missing" in r.stderr and
              "modprobe fuse" in r.stderr, f"rc {r.returncode}: {r.stderr.strip()}")
    res.check("failed_mount_leaves_no_store", not os.path.exists(store), store)
    os.makedirs(store)        # an existing empty directory stays empty
    r = run("unshare", "-m", "--propagation", "private", "sh", "-c", script, TPDEFS, store, mnt)
    res.check("failed_mount_empties_an_empty_store", r.returncode == 1 and os.listdir(store) == [],
              f"rc {r.returncode}: {os.listdir(store)}")


try:
    mounting_mistakes()
    readiness()
    attributes_and_stats()
    logging()
    readme_pytorch_example()
    syslog_when_detached()
    missing_device()
finally:
    if not any(p.startswith(BASE) for p in open("/proc/self/mountinfo").read().split()):
        shutil.rmtree(BASE, ignore_errors=True)
res.finish()

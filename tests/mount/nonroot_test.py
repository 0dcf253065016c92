#!/usr/bin/python3
"""A normal user mounts a store it owns, through the setuid fusermount3:

- /dev/fuse not accessible to users (mode 0600 for this check): the mount fails with exit
  status 1 and a message that says permission was denied on /dev/fuse and what to do, and no
  store directory is left behind (a missing one is not created, an empty one stays empty);
- /dev/fuse 0666 (stock Debian's mode): the user mounts (`tpdefs STORE MNT --allow-other`),
  writes and reads a file bit-exact, `tpde stats` reads the counters, and what needs root
  degrades with one log line each, no failure: read-ahead (sysfs) stays at the default,
  allow_other is dropped without user_allow_other in /etc/fuse.conf; the user unmounts with
  `fusermount3 -u` and the daemon exits.

A user is created for the run (useradd) and removed after, and /dev/fuse gets its original
mode back, always (also on SIGTERM/SIGHUP and at exit).

Usage: nonroot_test.py TPDEFS [RESULTS_DIR]; results in RESULTS_DIR/mount_nonroot.count.
Exits 77 (skip) without root, /dev/fuse, fusermount3 (setuid), useradd.
"""
import atexit
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from mount_util import Results, is_mounted, require_mount, _fusermount

TPDEFS_BUILD = os.path.abspath(sys.argv[1])
res = Results("mount_nonroot", sys.argv[2] if len(sys.argv) > 2 else None)
require_mount(res, TPDEFS_BUILD)
FUSERMOUNT = shutil.which("fusermount3")
st = os.stat(FUSERMOUNT)
if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
    res.skip(f"{FUSERMOUNT} is not setuid root: users cannot mount")
for tool in ("useradd", "userdel"):
    if not shutil.which(tool):
        res.skip(f"{tool} is not installed (Debian package passwd)")

_undo = []


def _undo_all():
    while _undo:
        try:
            _undo.pop()()
        except Exception as e:
            print(f"cleanup failed: {e!r}", file=sys.stderr)


def _on_signal(sig, frame):
    _undo_all()
    raise SystemExit(128 + sig)


atexit.register(_undo_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)

FUSE_MODE = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
_undo.append(lambda: os.chmod("/dev/fuse", FUSE_MODE))

USER = f"tpdefs-t{os.getpid() % 100000}"
r = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                   capture_output=True, text=True)
if r.returncode != 0:
    res.skip(f"useradd failed: {r.stderr.strip()}")
_undo.append(lambda: subprocess.run(["userdel", USER], capture_output=True))
PW = pwd.getpwnam(USER)

BASE = tempfile.mkdtemp(prefix="tpdefs-nonroot-")
os.chmod(BASE, 0o755)
_undo.append(lambda: shutil.rmtree(BASE, ignore_errors=True)
             if BASE not in open("/proc/self/mountinfo").read() else None)
# The programs, where the user can run them (the build tree may not be readable by others).
BIN = os.path.join(BASE, "bin")
os.makedirs(BIN)
for name in ("tpdefs", "tpde"):
    shutil.copy(os.path.join(os.path.dirname(TPDEFS_BUILD), name), BIN)
TPDEFS, TPDE = os.path.join(BIN, "tpdefs"), os.path.join(BIN, "tpde")
HOME = os.path.join(BASE, "home")
os.makedirs(HOME)
os.chown(HOME, PW.pw_uid, PW.pw_gid)


def as_user(*cmd, timeout=60):
    env = {"HOME": HOME, "PATH": "/usr/bin:/bin", "USER": USER, "LANG": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=HOME, user=PW.pw_uid, group=PW.pw_gid, extra_groups=[])


def user_mkdir(path):
    os.makedirs(path)
    os.chown(path, PW.pw_uid, PW.pw_gid)


def mount_options(path):
    found = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 5 and fields[4] == path:
                found = fields[5] + "," + right.split()[-1]
    return found


def refused_without_device_access():
    os.chmod("/dev/fuse", 0o600)
    mnt, store = os.path.join(HOME, "mnt-denied"), os.path.join(HOME, "store-denied")
    user_mkdir(mnt)
    r = as_user(TPDEFS, store, mnt)
    res.check("eacces_message_says_why",
              r.returncode == 1 and "permission denied opening /dev/fuse" in r.stderr and
              "0666" in r.stderr, f"rc {r.returncode}: {r.stderr.strip()}")
    res.check("eacces_leaves_no_store", not os.path.exists(store), store)
    user_mkdir(store)
    r = as_user(TPDEFS, store, mnt)
    res.check("eacces_empty_store_stays_empty", r.returncode == 1 and os.listdir(store) == [],
              f"rc {r.returncode}: {os.listdir(store)}")


def user_mount():
    os.chmod("/dev/fuse", 0o666)
    mnt, store = os.path.join(HOME, "mnt"), os.path.join(HOME, "store")
    log = os.path.join(HOME, "tpdefs.log")
    user_mkdir(mnt)
    r = as_user(TPDEFS, store, mnt, "--allow-other", "--log-file", log)
    try:
        mounted_ok = r.returncode == 0 and is_mounted(mnt)
        res.check("user_mounts", mounted_ok, f"rc {r.returncode}: {r.stderr.strip()}")
        if not mounted_ok:
            return
        opts = mount_options(mnt)
        res.check("mount_is_the_users", f"user_id={PW.pw_uid}" in opts, opts)
        data = os.urandom(3 << 20)
        path = os.path.join(mnt, "checkpoint-1.bin")
        # The bytes go in and come back out through the user's own processes.
        proc = subprocess.run(["/bin/sh", "-c", f"cat > '{path}'"], input=data,
                              capture_output=True, timeout=60, user=PW.pw_uid, group=PW.pw_gid,
                              extra_groups=[], cwd=HOME)
        back = subprocess.run(["/bin/cat", path], capture_output=True, timeout=60,
                              user=PW.pw_uid, group=PW.pw_gid, extra_groups=[], cwd=HOME)
        res.check("user_roundtrip", proc.returncode == 0 and back.stdout == data,
                  f"write rc {proc.returncode} {proc.stderr[-200:]}, read {len(back.stdout)} "
                  f"bytes {back.stderr[-200:]}")
        r = as_user(TPDE, "stats", mnt)
        res.check("user_tpde_stats", r.returncode == 0 and "files:" in r.stdout,
                  f"rc {r.returncode}: {r.stdout}{r.stderr}")
        text = open(log).read() if os.path.exists(log) else ""
        lines = text.splitlines()
        ra = [l for l in lines if "read-ahead" in l]
        res.check("read_ahead_degrades_in_one_line",
                  len(ra) == 1 and "needs root" in ra[0] and "[error]" not in ra[0], ra)
        allow = [l for l in lines if "allow_other" in l]
        conf = open("/etc/fuse.conf").read() if os.path.exists("/etc/fuse.conf") else ""
        if "user_allow_other" in [l.strip() for l in conf.splitlines()]:
            res.skip_one("allow_other_degrades_in_one_line",
                         "/etc/fuse.conf has user_allow_other: nothing to degrade")
        else:
            res.check("allow_other_degrades_in_one_line",
                      len(allow) == 1 and "[warning]" in allow[0] and
                      "user_allow_other" in allow[0] and "allow_other" not in opts.split(","),
                      f"{allow}; mount options {opts}")
        res.check("no_error_lines", not [l for l in lines if "[error]" in l], text[-500:])
        r = as_user(FUSERMOUNT, "-u", mnt)
        res.check("user_unmounts", r.returncode == 0 and not is_mounted(mnt),
                  f"rc {r.returncode}: {r.stderr.strip()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and as_user(TPDE, "ls", store).returncode != 0:
            time.sleep(0.1)
        res.check("user_daemon_exits", as_user(TPDE, "ls", store).returncode == 0)
    finally:
        if is_mounted(mnt):
            _fusermount(["-uz"], mnt)


try:
    refused_without_device_access()
    user_mount()
finally:
    _undo_all()
res.check("dev_fuse_mode_restored", stat.S_IMODE(os.stat("/dev/fuse").st_mode) == FUSE_MODE)
res.check("user_removed", subprocess.run(["id", USER], capture_output=True).returncode != 0)
res.finish()

#!/usr/bin/python3
"""Installing and mounting tpdefs like any other filesystem:

- `meson install --destdir` puts tpdefs and tpde in bin, mount.tpdefs (executable, running
  the installed tpdefs) and mount.fuse.tpdefs (fuse3's mount.fuse3) in sbin, tpdefs(1),
  tpde(1) and mount.tpdefs(8) in the man directories;
- `mount -t tpdefs STORE MNT -o cache_mib=256` mounts (the daemon runs with a 256 MiB
  cache), a file written reads back bit-exact, `umount MNT` unmounts and the daemon exits;
  mount(8) returns the helper's statuses (32 for a refused mount, 1 for a bad option);
- `mount -t fuse.tpdefs` (through mount.fuse3) mounts too;
- an /etc/fstab line `STORE MNT tpdefs defaults,nofail 0 0` with `mount MNT` and
  `umount MNT`.

For the real mounts the build's helper is put in /sbin for the run (mount(8) looks only
there) and the build's tpdefs in /usr/local/bin (for mount.fuse3); what was there (an
installed package) is moved aside and put back, and /etc/fstab is backed up and restored,
always (also on SIGTERM/SIGHUP and at exit).

Usage: install_test.py TPDEFS SOURCE_ROOT BUILD_ROOT [RESULTS_DIR]; results in
RESULTS_DIR/mount_install.count. Without /dev/fuse, fusermount3, root or mount(8) the
mounts are skipped (counted, with the reason) and the install checks still run.
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mount_util import Results, is_mounted, skip_reason, _mount_fstype, _fusermount

TPDEFS = os.path.abspath(sys.argv[1])
TPDE = os.path.join(os.path.dirname(TPDEFS), "tpde")
ROOT, BUILD = sys.argv[2], sys.argv[3]
res = Results("mount_install", sys.argv[4] if len(sys.argv) > 4 else None)
BASE = tempfile.mkdtemp(prefix="tpdefs-install-")


def run(*cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def installed_files():
    dest = os.path.join(BASE, "destdir")
    r = run("meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild", "--quiet",
            timeout=300)
    if r.returncode != 0:
        res.check("meson_install", False, r.stdout + r.stderr)
        return
    found = {}
    for d, dirs, files in os.walk(dest):
        for n in files + dirs:
            p = os.path.join(d, n)
            found[os.path.relpath(p, dest)] = p
    prefix = json.loads(run("meson", "introspect", "--buildoptions", BUILD).stdout)
    opt = {o["name"]: o["value"] for o in prefix}
    pre = opt["prefix"].lstrip("/")
    sbin = (opt.get("mount_helper_dir") or os.path.join(opt["prefix"], opt["sbindir"]))
    sbin = sbin.lstrip("/")
    man = os.path.join(pre, opt["mandir"])
    want = {
        "bin_tpdefs": os.path.join(pre, opt["bindir"], "tpdefs"),
        "bin_tpde": os.path.join(pre, opt["bindir"], "tpde"),
        "sbin_mount_tpdefs": os.path.join(sbin, "mount.tpdefs"),
        "sbin_mount_fuse_tpdefs": os.path.join(sbin, "mount.fuse.tpdefs"),
        "man1_tpdefs": os.path.join(man, "man1", "tpdefs.1"),
        "man1_tpde": os.path.join(man, "man1", "tpde.1"),
        "man8_mount_tpdefs": os.path.join(man, "man8", "mount.tpdefs.8"),
        "man8_mount_fuse_tpdefs": os.path.join(man, "man8", "mount.fuse.tpdefs.8"),
    }
    for name, rel in want.items():
        res.check(f"installs_{name}", rel in found, f"{rel} not in {sorted(found)}")
    helper = found.get(want["sbin_mount_tpdefs"])
    if helper:
        text = open(helper).read()
        res.check("installed_helper_runs_installed_tpdefs",
                  os.access(helper, os.X_OK) and
                  f"tpdefs='/{want['bin_tpdefs']}'" in text, text[:400])
    link = found.get(want["sbin_mount_fuse_tpdefs"])
    res.check("installed_fuse_helper_is_mount_fuse3",
              link and os.path.islink(link) and os.readlink(link) == "/sbin/mount.fuse3",
              link and os.path.islink(link) and os.readlink(link))


# --- /sbin helpers and /etc/fstab, always put back -----------------------------------------
_restore = []


def _restore_all():
    while _restore:
        try:
            _restore.pop()()
        except Exception as e:
            print(f"restore failed: {e!r}", file=sys.stderr)


def _on_signal(sig, frame):
    _restore_all()
    raise SystemExit(128 + sig)


atexit.register(_restore_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def put_aside(path):
    """Moves `path` away (if present); registers removing what the test puts there and
    putting the original back."""
    backup = path + ".tpdefs-test-saved"
    had = os.path.lexists(path)
    if had:
        os.rename(path, backup)

    def put_back():
        if os.path.lexists(path):
            os.remove(path)
        if had:
            os.rename(backup, path)
    _restore.append(put_back)


def install_helpers():
    helper = os.path.join(BASE, "mount.tpdefs")
    with open(os.path.join(ROOT, "src", "tools", "mount.tpdefs.in")) as f:
        text = f.read().replace("@TPDEFS@", TPDEFS)
    with open(helper, "w") as f:
        f.write(text)
    os.chmod(helper, 0o755)
    for name, target in (("mount.tpdefs", helper), ("mount.fuse.tpdefs", "/sbin/mount.fuse3")):
        put_aside(os.path.join("/sbin", name))
        os.symlink(target, os.path.join("/sbin", name))


def wait_released(store, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(TPDE, "ls", store).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def roundtrip(mnt, name):
    data = os.urandom(5 << 20)
    p = os.path.join(mnt, name)
    with open(p, "wb") as f:
        f.write(data)
    with open(p, "rb") as f:
        return f.read() == data


def cleanup_mount(mnt):
    if is_mounted(mnt):
        _fusermount(["-u"], mnt)
    if is_mounted(mnt):
        _fusermount(["-uz"], mnt)


def mount_t():
    store, mnt = os.path.join(BASE, "store"), os.path.join(BASE, "mnt")
    os.makedirs(mnt)
    try:
        r = run("mount", "-t", "tpdefs", store, mnt, "-o", "cache_mib=256")
        res.check("mount_t_tpdefs", r.returncode == 0 and _mount_fstype(mnt) == "fuse.tpdefs",
                  f"rc {r.returncode}: {r.stderr.strip()}")
        if r.returncode != 0:
            return
        stats = json.loads(os.getxattr(mnt, "user.tpde.stats"))
        res.check("mount_t_option_reaches_daemon", stats["cache"]["max_bytes"] == 256 << 20,
                  stats["cache"])
        res.check("mount_t_roundtrip", roundtrip(mnt, "a.bin"))
        r = run("mount", "-t", "tpdefs", os.path.join(BASE, "other"), mnt)
        res.check("mount_t_refused_over_mount_is_32",
                  r.returncode == 32 and "already a mount point" in r.stderr,
                  f"rc {r.returncode}: {r.stderr.strip()}")
        r = run("umount", mnt)
        res.check("umount", r.returncode == 0 and not is_mounted(mnt),
                  f"rc {r.returncode}: {r.stderr.strip()}")
        res.check("daemon_exits_after_umount", wait_released(store))
        r = run("mount", "-t", "tpdefs", store, mnt, "-o", "cache_mib=256,bogus")
        res.check("mount_t_bad_option_is_1",
                  r.returncode == 1 and "unknown mount option 'bogus'" in r.stderr and
                  not is_mounted(mnt), f"rc {r.returncode}: {r.stderr.strip()}")
    finally:
        cleanup_mount(mnt)
    # fuse.tpdefs: mount.fuse3 runs `tpdefs` from PATH, which mount(8) resets to the
    # standard one: the build's tpdefs goes in /usr/local/bin for this (what was there is
    # put back).
    put_aside("/usr/local/bin/tpdefs")
    os.symlink(TPDEFS, "/usr/local/bin/tpdefs")
    try:
        r = run("mount", "-t", "fuse.tpdefs", store, mnt, "-o", "cache_mib=128")
        ok = r.returncode == 0 and _mount_fstype(mnt) == "fuse.tpdefs"
        res.check("mount_t_fuse_tpdefs", ok, f"rc {r.returncode}: {r.stderr.strip()}")
        if ok:
            with open(os.path.join(mnt, "a.bin"), "rb") as f:
                res.check("mount_t_fuse_tpdefs_reads_earlier_file", len(f.read()) == 5 << 20)
            r = run("umount", mnt)
            res.check("umount_fuse_tpdefs", r.returncode == 0 and not is_mounted(mnt),
                      r.stderr)
            wait_released(store)
    finally:
        cleanup_mount(mnt)


def fstab():
    store, mnt = os.path.join(BASE, "fstab-store"), os.path.join(BASE, "fstab-mnt")
    os.makedirs(mnt)
    saved = os.path.join(BASE, "fstab.saved")
    shutil.copy2("/etc/fstab", saved)

    def put_back():
        shutil.copy2(saved, "/etc/fstab")
    _restore.append(put_back)
    try:
        with open("/etc/fstab", "a") as f:
            f.write(f"\n{store} {mnt} tpdefs defaults,nofail 0 0\n")
        r = run("mount", mnt)
        ok = r.returncode == 0 and _mount_fstype(mnt) == "fuse.tpdefs"
        res.check("fstab_mount", ok, f"rc {r.returncode}: {r.stderr.strip()}")
        if ok:
            res.check("fstab_roundtrip", roundtrip(mnt, "checkpoint-1.bin"))
            r = run("umount", mnt)
            res.check("fstab_umount", r.returncode == 0 and not is_mounted(mnt), r.stderr)
            res.check("fstab_daemon_exits", wait_released(store))
    finally:
        cleanup_mount(mnt)
        put_back()
        _restore.remove(put_back)
    with open("/etc/fstab") as a, open(saved) as b:
        res.check("fstab_restored", a.read() == b.read())


try:
    installed_files()
    why = skip_reason()
    if why:
        pass
    elif not os.access(TPDEFS, os.X_OK):
        why = f"{TPDEFS} is not an executable"
    elif not shutil.which("mount") or not shutil.which("umount"):
        why = "mount(8) is not installed"
    elif not os.path.exists("/sbin/mount.fuse3"):
        why = "/sbin/mount.fuse3 is missing (Debian package fuse3)"
    if why:
        for n in ("mount_t", "fstab"):
            res.skip_one(n, why)
    else:
        install_helpers()
        mount_t()
        fstab()
finally:
    _restore_all()
    if BASE not in open("/proc/self/mountinfo").read():
        shutil.rmtree(BASE, ignore_errors=True)
res.finish()

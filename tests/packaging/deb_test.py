#!/usr/bin/python3
"""The Debian package, built, checked, installed, used and purged:

- packaging/build-deb.sh builds it with `dpkg-buildpackage -us -uc -b` (in a copy of the
  tree, from Debian packages only); its version is meson.build's;
- Depends carries fuse3 and what dpkg-shlibdeps found (libfuse3, libzstd, libxxhash, libfmt,
  libspdlog, libstdc++), and the package holds the programs, the mount helpers, the man pages
  and the systemd unit;
- lintian reports no error (its warnings are printed, not failed);
- installed with dpkg -i: `mount -t tpdefs STORE MNT -o cache_mib=64` (the installed
  /usr/sbin/mount.tpdefs and /usr/bin/tpdefs), a checkpoint written (torch.save when
  python3-torch is there, else bytes) reads back bit-exact, `umount`, the daemon exits;
- `dpkg --purge tpdefs` removes every file it installed.

Skips (exit 77) without root, dpkg-buildpackage, the build dependencies, /dev/fuse or
fusermount3, or when a tpdefs package is already installed (this test will not replace
or purge it). Time-bounded: the build (~4 min on 2 cores) gets 20 min, lintian 5.

Usage: deb_test.py SOURCE_ROOT [RESULTS_DIR]; results in RESULTS_DIR/deb_package.count.
TPDEFS_DEB=path/tpdefs_VERSION_ARCH.deb checks a package built before instead of building
(its .changes beside it is what lintian reads).
"""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mount"))
from mount_util import Results, is_mounted, skip_reason, _mount_fstype, _fusermount  # noqa

ROOT = os.path.abspath(sys.argv[1])
res = Results("deb_package", sys.argv[2] if len(sys.argv) > 2 else None)


def run(*cmd, timeout=120, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, 124, e.stdout or "", f"timed out after {timeout} s")


why = skip_reason()
if not why and not shutil.which("dpkg-buildpackage"):
    why = "dpkg-buildpackage is not installed (dpkg-dev; scripts/setup.sh installs it)"
if not why:
    r = run("dpkg-checkbuilddeps", os.path.join(ROOT, "packaging", "debian", "control"),
            cwd=ROOT)
    if r.returncode != 0:
        why = f"build dependencies missing ({r.stderr.strip()}); scripts/setup.sh installs them"
if not why and run("dpkg-query", "-W", "-f=${Status}", "tpdefs").stdout.startswith("install"):
    why = "a tpdefs package is installed already: this test will not replace or purge it"
if why:
    res.skip(why)

WORK = tempfile.mkdtemp(prefix="tpdefs-deb-test-")
installed = False


def cleanup():
    global installed
    for mnt in (os.path.join(WORK, "mnt"),):
        if is_mounted(mnt):
            _fusermount(["-uz"], mnt)
    if installed:
        run("dpkg", "--purge", "tpdefs", timeout=300)
        installed = False
    if WORK not in open("/proc/self/mountinfo").read():
        shutil.rmtree(WORK, ignore_errors=True)


def on_signal(sig, frame):
    cleanup()
    raise SystemExit(128 + sig)


atexit.register(cleanup)
for s in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on_signal)

version = re.search(r"version:\s*'([^']+)'", open(os.path.join(ROOT, "meson.build")).read())[1]
out = os.path.join(WORK, "out")
if os.environ.get("TPDEFS_DEB"):
    # Re-running the checks on a package built before (the build takes minutes).
    os.makedirs(out)
    for f in os.listdir(os.path.dirname(os.path.abspath(os.environ["TPDEFS_DEB"]))):
        if f.startswith("tpdefs"):
            shutil.copy(os.path.join(os.path.dirname(os.path.abspath(os.environ["TPDEFS_DEB"])),
                                     f), out)
    debs = [os.path.basename(os.environ["TPDEFS_DEB"])]
    res.skip_one("dpkg_buildpackage", f"TPDEFS_DEB={os.environ['TPDEFS_DEB']}: built before")
else:
    t = time.monotonic()
    r = run(os.path.join(ROOT, "packaging", "build-deb.sh"), out, timeout=1200)
    build_s = time.monotonic() - t
    debs = sorted(f for f in os.listdir(out) if re.fullmatch(r"tpdefs_.*\.deb", f)) \
        if os.path.isdir(out) else []
    res.check("dpkg_buildpackage", r.returncode == 0 and debs,
              f"rc {r.returncode} after {build_s:.0f} s: {(r.stdout + r.stderr)[-3000:]}")
    print(f"build-deb.sh took {build_s:.0f} s", flush=True)
if not debs:
    res.finish()
deb = os.path.join(out, debs[0])
fields = {k: run("dpkg-deb", "-f", deb, k).stdout.strip() for k in ("Version", "Depends")}
res.check("version_is_mesons", fields["Version"] == version, fields)
deps = [d.strip().split()[0] for d in fields["Depends"].split(",")]
want = ["fuse3", "libfuse3-", "libzstd", "libxxhash", "libfmt", "libspdlog", "libstdc++",
        "libc6"]       # package names, up to their soname part
missing = [w for w in want if not any(d == w or d.startswith(w) for d in deps)]
res.check("depends_fuse3_and_shlibs", not missing,
          f"Depends: {fields['Depends']}; missing {missing}")
listing = run("dpkg-deb", "-c", deb).stdout
files = ["./usr/bin/tpdefs", "./usr/bin/tpde", "./usr/sbin/mount.tpdefs",
         "./usr/sbin/mount.fuse.tpdefs -> /sbin/mount.fuse3",
         "./usr/share/man/man1/tpdefs.1.gz", "./usr/share/man/man1/tpde.1.gz",
         "./usr/share/man/man8/mount.tpdefs.8.gz", "./lib/systemd/system/tpdefs@.service",
         "./usr/share/doc/tpdefs/examples/example.conf"]
res.check("package_contents", all(f in listing for f in files),
          f"missing: {[f for f in files if f not in listing]}")

if shutil.which("lintian"):
    changes = [f for f in os.listdir(out) if f.endswith(".changes")]
    r = run("lintian", "--fail-on", "error", "--display-info",
            os.path.join(out, changes[0]) if changes else deb, timeout=300)
    print("lintian:\n" + (r.stdout.strip() or "(nothing)"), flush=True)
    errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
    res.check("lintian_no_errors", r.returncode == 0 and not errors,
              f"rc {r.returncode}: {errors or r.stderr.strip()}")
else:
    res.skip_one("lintian_no_errors", "lintian is not installed (scripts/setup.sh installs it)")

r = run("dpkg", "-i", deb, timeout=300)
installed = r.returncode == 0
res.check("dpkg_install", installed, r.stdout[-1000:] + r.stderr[-1000:])
if installed:
    store, mnt = os.path.join(WORK, "store"), os.path.join(WORK, "mnt")
    os.makedirs(mnt)
    r = run("mount", "-t", "tpdefs", store, mnt, "-o", "cache_mib=64")
    ok = r.returncode == 0 and _mount_fstype(mnt) == "fuse.tpdefs"
    res.check("installed_mount_t_tpdefs", ok, f"rc {r.returncode}: {r.stderr.strip()}")
    if ok:
        # A checkpoint made outside (torch.save when torch is there), copied in, compared
        # byte for byte, and loaded back through the mount.
        src = os.path.join(WORK, "model.pt")
        ckpt = os.path.join(mnt, "checkpoint-1", "model.pt")
        os.makedirs(os.path.dirname(ckpt))
        code = ("import sys, torch\n"
                "torch.manual_seed(0)\n"
                "torch.save({'w': torch.randn(512, 512), 'b': torch.randn(512)}, sys.argv[1])\n")
        made = run("/usr/bin/python3", "-c", code, src, timeout=240).returncode == 0
        if not made:
            with open(src, "wb") as f:
                f.write(os.urandom(4 << 20))
        shutil.copyfile(src, ckpt)
        r2 = run("/usr/bin/tpde", "stats", "--wait-idle", "--timeout", "120", "--json", mnt)
        same = open(src, "rb").read() == open(ckpt, "rb").read()
        loads = True
        if made:
            check = ("import sys, torch\n"
                     "a, b = torch.load(sys.argv[1]), torch.load(sys.argv[2])\n"
                     "assert all(torch.equal(a[k], b[k]) for k in a)\n")
            loads = run("/usr/bin/python3", "-c", check, src, ckpt, timeout=240).returncode == 0
        res.check("installed_checkpoint_roundtrip", same and loads and r2.returncode == 0,
                  f"bytes equal {same}, torch.load equal {loads} (torch checkpoint: {made}); "
                  f"stats rc {r2.returncode}: {r2.stderr.strip()}")
        r = run("umount", mnt)
        res.check("installed_umount", r.returncode == 0 and not is_mounted(mnt), r.stderr)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and run("/usr/bin/tpde", "ls", store).returncode:
            time.sleep(0.2)
        r = subprocess.run(["/usr/bin/tpde", "cat", store, "checkpoint-1/model.pt"],
                           capture_output=True, timeout=120)
        res.check("installed_daemon_exits_store_intact",
                  r.returncode == 0 and r.stdout == open(src, "rb").read(), r.stderr[-500:])
    r = run("dpkg", "--purge", "tpdefs", timeout=300)
    installed = False
    gone = [f for f in ("/usr/bin/tpdefs", "/usr/bin/tpde", "/usr/sbin/mount.tpdefs",
                        "/usr/sbin/mount.fuse.tpdefs", "/lib/systemd/system/tpdefs@.service",
                        "/usr/share/man/man1/tpdefs.1.gz") if os.path.lexists(f)]
    res.check("dpkg_purge_removes_files", r.returncode == 0 and not gone and
              not run("dpkg-query", "-W", "-f=${Status}", "tpdefs").stdout.startswith("install"),
              f"rc {r.returncode}: left {gone}; {r.stderr.strip()}")
cleanup()
res.finish()

#!/usr/bin/python3
"""A full disk under a real tpdefs mount: the store on a 40 MiB tmpfs.

A committed file is written and read back; then a 64 MiB file of random bytes (which no
compression shrinks) is written until a write() fails with ENOSPC. Space is then freed (a
filler file beside the store is removed) before the file is closed: close() must still fail,
since the file lacks what the failed write carried, and the file must stay as it was
committed (empty: the create). The committed file still reads back bit-exact, the mount keeps
working, and after a remount everything committed is there and `tpde fsck` finds the store
clean.

Counted checks: committed_before, write_enospc, close_fails_after_freeing,
failed_file_unchanged, committed_survives, write_after_freeing, remount_verify, fsck_clean,
daemon_clean_exit.

Usage: full_disk_test.py TPDEFS_BIN [RESULTS_DIR]   (RESULTS_DIR defaults to $RESULTS_DIR;
`tpde` is taken from beside TPDEFS_BIN). Results: RESULTS_DIR/mount_full_disk.count. Exits 77
(skip) without /dev/fuse, fusermount3 or root.
"""
import errno
import hashlib
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import sha_file, Results, mounted, require_mount  # noqa: E402

CHUNK = 1 << 20


def write_file(path, data):
    """Writes `data` in 1 MiB writes and closes; returns the OSError raised, or None."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    err = None
    try:
        for off in range(0, len(data), CHUNK):
            view = memoryview(data)[off:off + CHUNK]
            while view:
                view = view[os.write(fd, view):]
    except OSError as e:
        err = e
    try:
        os.close(fd)
    except OSError as e:
        err = err or e
    return err


def matches(path, data):
    return sha_file(path) == (hashlib.sha256(data).hexdigest(), len(data))


def main():
    tpdefs = os.path.abspath(sys.argv[1])
    res = Results("mount_full_disk", sys.argv[2] if len(sys.argv) > 2 else None)
    require_mount(res, tpdefs)
    tpde = os.path.join(os.path.dirname(tpdefs), "tpde")
    disk = tempfile.mkdtemp(prefix="tpdefs-full-disk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", disk],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(disk)
        res.skip(f"cannot mount a tmpfs to fill: {r.stderr.strip()}")
    try:
        store = os.path.join(disk, "store")
        filler = os.path.join(disk, "filler")
        with open(filler, "wb") as f:
            f.write(os.urandom(8 << 20))
        kept = os.urandom(4 << 20)
        later = os.urandom(2 << 20)
        with mounted(tpdefs, store_dir=store, watchdog=120) as m:
            a = os.path.join(m.mnt, "kept.bin")
            res.check("committed_before", write_file(a, kept) is None and matches(a, kept))
            b = os.path.join(m.mnt, "too-big.bin")
            fd = os.open(b, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            err = None
            try:
                for _ in range(64):
                    os.write(fd, os.urandom(CHUNK))
            except OSError as e:
                err = e
            res.check("write_enospc", err is not None and err.errno == errno.ENOSPC,
                      f"got {err!r}")
            os.unlink(filler)
            try:
                os.close(fd)
                err = None
            except OSError as e:
                err = e
            res.check("close_fails_after_freeing", err is not None and err.errno == errno.ENOSPC,
                      f"got {err!r}")
            res.check("failed_file_unchanged", os.path.getsize(b) == 0,
                      f"size {os.path.getsize(b)} after a failed write")
            res.check("committed_survives", matches(a, kept))
            os.unlink(b)
            c = os.path.join(m.mnt, "later.bin")
            err = write_file(c, later)
            res.check("write_after_freeing", err is None and matches(c, later), f"got {err!r}")
        # The daemon's error line names the file in the mount and the cause.
        lines = [l for l in m.final_log.splitlines() if "[error]" in l]
        res.check("error_line_names_path_and_cause",
                  any("/too-big.bin" in l and "No space left on device" in l for l in lines),
                  "error lines: " + " | ".join(lines[:5]))
        with mounted(tpdefs, store_dir=store, watchdog=60) as m2:
            res.check("remount_verify",
                      matches(os.path.join(m2.mnt, "kept.bin"), kept) and
                      matches(os.path.join(m2.mnt, "later.bin"), later) and
                      not os.path.exists(os.path.join(m2.mnt, "too-big.bin")))
        fsck = subprocess.run([tpde, "fsck", store], capture_output=True, text=True)
        res.check("fsck_clean", fsck.returncode == 0, (fsck.stdout + fsck.stderr).strip())
        res.check("daemon_clean_exit", m.returncode == 0 and m2.returncode == 0,
                  f"exit status {m.returncode}, {m2.returncode}")
    finally:
        subprocess.run(["umount", disk])
        os.rmdir(disk)
    res.finish()


if __name__ == "__main__":
    main()

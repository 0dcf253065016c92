#!/usr/bin/python3
"""The backing store misbehaves under a running tpdefs mount.

Read-only: the store lives on a small ext4 image (loop device) mounted errors=remount-ro;
after a committed write, ext4 is made to fail (/sys/fs/ext4/DEV/trigger_fs_error), so the
kernel remounts it read-only as it would after a disk error. Writers then get EROFS (create,
rewrite at close, mkdir, unlink, rename), the committed file still reads back bit-exact, the
daemon keeps serving and exits 0 at unmount.

Moved away and replaced: the store directory is renamed and an empty directory put in its
place. A write through the mount must fail at close (the error reaches the caller), nothing
may be written into the new directory, and what was committed before reads back bit-exact
from the moved store (remounted).

EIO from the disk cannot be produced on these machines (no device-mapper, no fault
injection in the kernel): see docs/reliability.md.

Usage: backing_test.py TPDEFS_BIN [RESULTS_DIR]. Results: RESULTS_DIR/mount_backing.count.
Exits 77 (skip) without /dev/fuse, fusermount3, root, or loop devices and ext4.
"""
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import Results, mounted, require_mount, sha_file  # noqa: E402


def errno_of(fn):
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno


def write_close(path, data, flags=os.O_CREAT | os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def rewrite_close(path):
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"changed", 5)
    finally:
        os.close(fd)


def matches(path, data):
    return sha_file(path) == (hashlib.sha256(data).hexdigest(), len(data))


def read_only_store(res, tpdefs, work):
    img, disk = os.path.join(work, "ext4.img"), os.path.join(work, "ext4")
    os.mkdir(disk)
    with open(img, "wb") as f:
        f.truncate(128 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", img, disk],
                           capture_output=True, text=True)
    if r.returncode != 0:
        for name in ("ro_writers_get_erofs", "ro_reads_keep_working", "ro_daemon_serves"):
            res.skip_one(name, f"cannot mount an ext4 image: {r.stderr.strip()[:200]}")
        return
    try:
        dev = os.path.basename(subprocess.run(["findmnt", "-n", "-o", "SOURCE", disk],
                                              capture_output=True, text=True).stdout.strip())
        trigger = f"/sys/fs/ext4/{dev}/trigger_fs_error"
        with mounted(tpdefs, store_dir=os.path.join(disk, "store"), watchdog=120) as m:
            a = os.path.join(m.mnt, "a.bin")
            data = os.urandom(3 << 20) + b"odd"
            write_close(a, data)
            with open(trigger, "w") as f:
                f.write("tpdefs backing_test\n")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not is_read_only(disk):
                time.sleep(0.1)
            if not is_read_only(disk):
                res.check("ro_writers_get_erofs", False, f"{disk} did not turn read-only")
                return
            got = {
                "create": errno_of(lambda: write_close(os.path.join(m.mnt, "b.bin"), b"x")),
                "rewrite": errno_of(lambda: rewrite_close(a)),
                "mkdir": errno_of(lambda: os.mkdir(os.path.join(m.mnt, "d"))),
                "unlink": errno_of(lambda: os.unlink(a)),
                "rename": errno_of(lambda: os.rename(a, os.path.join(m.mnt, "a2"))),
            }
            res.check("ro_writers_get_erofs", all(e == errno.EROFS for e in got.values()),
                      {k: errno.errorcode.get(v, v) for k, v in got.items()})
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")        # reads go to the read-only disk, not the page cache
            res.check("ro_reads_keep_working", matches(a, data) and
                      sorted(os.listdir(m.mnt)) == ["a.bin"], f"listing {os.listdir(m.mnt)}")
            res.check("ro_daemon_serves", m.alive() and os.stat(a).st_size == len(data))
        res.check("ro_clean_exit", m.returncode == 0, m.final_log[-400:])
    finally:
        subprocess.run(["umount", disk], capture_output=True)


def is_read_only(mnt):
    """ext4's remount-ro after an error need not show in /proc/mounts: try a write."""
    return errno_of(lambda: write_close(os.path.join(mnt, "probe"), b"p")) == errno.EROFS


def replaced_store(res, tpdefs, work):
    store = os.path.join(work, "store")
    data = os.urandom(2 << 20) + b"tail"
    with mounted(tpdefs, store_dir=store, watchdog=120) as m:
        a = os.path.join(m.mnt, "a.bin")
        write_close(a, data)
        os.rename(store, store + ".moved")
        os.mkdir(store)
        e = errno_of(lambda: write_close(os.path.join(m.mnt, "e.bin"), b"e" * 5000))
        res.check("moved_store_write_fails_at_close", e != 0, "close() returned 0")
        res.check("moved_store_nothing_written_elsewhere", os.listdir(store) == [],
                  f"new directory holds {os.listdir(store)}")
        os.rmdir(store)
    res.check("moved_store_daemon_exit", m.returncode == 0, m.final_log[-400:])
    os.rename(store + ".moved", store)
    with mounted(tpdefs, store_dir=store, watchdog=60) as m:
        res.check("moved_store_committed_intact", matches(os.path.join(m.mnt, "a.bin"), data))


def main():
    tpdefs = os.path.abspath(sys.argv[1])
    res = Results("mount_backing", sys.argv[2] if len(sys.argv) > 2 else None)
    require_mount(res, tpdefs)
    work = tempfile.mkdtemp(prefix="tpdefs-backing-")
    try:
        read_only_store(res, tpdefs, work)
        replaced_store(res, tpdefs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res.finish()


if __name__ == "__main__":
    main()

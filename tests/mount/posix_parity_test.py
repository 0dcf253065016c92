#!/usr/bin/python3
"""POSIX parity of a real tpdefs mount: every scenario runs the same sequence of system
calls on the mount and on a plain directory of the same disk, and compares what each call
returned (value or errno) and the resulting bytes and metadata (type, permission bits,
size; mtime only where a test set it). One counted check per scenario; a failure shows
the first steps where the two sides differ. Where tpdefs documents a different behaviour
(hard links may fail with EPERM; virtual user.tpde.* attributes; "in use" for a second
daemon on one store) the check tests that behaviour instead. Ends with the daemon's clean
exit, a remount of the store (everything still there, byte for byte) and a SIGTERM stop.

Usage: posix_parity_test.py TPDEFS_BIN [RESULTS_DIR] [--self-test-plain] [--only=NAME,...]
RESULTS_DIR defaults to $RESULTS_DIR; results go to RESULTS_DIR/mount_posix_parity.count.
--self-test-plain runs both sides on plain directories (no mount): a check of the test
itself, usable without a daemon. Exits 77 (skip) without /dev/fuse, fusermount3 or root.
"""
import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_util import (MountError, Results, sha_file, is_mounted, mounted, set_pdeathsig,  # noqa: E402
                        require_mount)

SCENARIO_TIMEOUT = 60       # seconds; past it the daemon is killed (hung FUSE request)
MIB = 1 << 20
IDLE_COMPRESS_SECONDS = 2     # the mount's --idle-compress-seconds (see run_mounted)


# ---------------------------------------------------------------------------- recording

def short(v):
    """A comparable, printable form of a call's result."""
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v)
        if len(v) <= 48:
            return v
        return f"<{len(v)} bytes sha256:{hashlib.sha256(v).hexdigest()[:16]}>"
    if isinstance(v, list):
        return [short(x) for x in v]
    if isinstance(v, tuple):
        return tuple(short(x) for x in v)
    return v


def meta(path, follow=True):
    """(type, permission bits, size) — size only for regular files and symlinks."""
    st = os.stat(path) if follow else os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    name = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}.get(kind, oct(kind))
    size = st.st_size if kind in (stat.S_IFREG, stat.S_IFLNK) else None
    return (name, oct(stat.S_IMODE(st.st_mode)), size)


def fmeta(fd):
    st = os.fstat(fd)
    return (oct(stat.S_IMODE(st.st_mode)), st.st_size)


def read_all(path, chunk=MIB):
    with open(path, "rb", buffering=0) as f:
        parts = []
        while True:
            b = f.read(chunk)
            if not b:
                return b"".join(parts)
            parts.append(b)


def write_all(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[:MIB])
            view = view[n:]
    finally:
        os.close(fd)


def user_xattrs(path, follow=True):
    # user.tpde.* are tpdefs' virtual attributes (checked on their own below).
    names = [n for n in os.listxattr(path, follow_symlinks=follow)
             if n.startswith("user.") and not n.startswith("user.tpde.")]
    return sorted(names)


def randbytes(seed, n):
    return random.Random(seed).randbytes(n)


class Side:
    """Runs one side of a scenario and records (step, outcome) pairs."""

    def __init__(self, root):
        self.root = root
        self.obs = []
        self.details = []      # printed on failure, not compared
        self.fds = []

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def do(self, label, fn, *args, **kw):
        try:
            v = fn(*args, **kw)
            out = ("ok", short(v))
        except OSError as e:
            v = None
            out = ("err", errno.errorcode.get(e.errno, str(e.errno)))
        except Exception as e:  # e.g. a None fd after a failed open on this side only
            v = None
            out = ("exc", f"{type(e).__name__}: {e}")
        self.obs.append((label, out))
        return v

    def note(self, label, value):
        self.obs.append((label, ("val", short(value))))

    def open(self, label, path, flags, mode=0o644):
        fd = self.do(label, os.open, path, flags, mode)
        if fd is not None:
            self.fds.append(fd)
            self.obs[-1] = (label, ("ok", "fd"))   # fd numbers are not compared
        return fd

    def raw_open(self, path, flags, mode=0o644):
        """os.open, not recorded, closed by close_all() if the scenario fails midway."""
        fd = os.open(path, flags, mode)
        self.fds.append(fd)
        return fd

    def raw_close(self, fd):
        self.fds.remove(fd)
        os.close(fd)

    def close(self, label, fd):
        if fd in self.fds:
            self.fds.remove(fd)
        return self.do(label, os.close, fd)

    def close_all(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


# ---------------------------------------------------------------------------- scenarios

def sc_create_write_read(s):
    data = randbytes(1, 100_003)
    fd = s.open("create", s.p("f"), os.O_CREAT | os.O_WRONLY, 0o644)
    s.do("write", os.write, fd, data)
    s.do("fstat while open", fmeta, fd)
    s.close("close", fd)
    s.do("read back", read_all, s.p("f"))
    s.do("stat", meta, s.p("f"))
    fd = s.open("create empty", s.p("empty"), os.O_CREAT | os.O_WRONLY)
    s.close("close empty", fd)
    s.do("read empty", read_all, s.p("empty"))
    s.do("stat empty", meta, s.p("empty"))
    s.do("write small via open()", write_all, s.p("small"), b"hello world\n")
    s.do("read small in 5-byte reads", read_all, s.p("small"), 5)
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_pwrite_holes(s):
    fd = s.open("create rdwr", s.p("f"), os.O_CREAT | os.O_RDWR)
    s.do("pwrite A@0", os.pwrite, fd, b"A" * 100, 0)
    s.do("pwrite B@1000", os.pwrite, fd, b"B" * 50, 1000)
    s.do("pwrite C@50 (overlap)", os.pwrite, fd, b"C" * 10, 50)
    s.do("pwrite D@5000000 (past EOF)", os.pwrite, fd, randbytes(2, 70_000), 5_000_000)
    s.do("pwrite E@3 (rewrite head)", os.pwrite, fd, b"E" * 3, 3)
    s.do("fstat size", fmeta, fd)
    s.do("pread in hole", os.pread, fd, 100, 2_000_000)
    s.do("pread across hole end", os.pread, fd, 64, 4_999_990)
    s.do("pread past EOF", os.pread, fd, 100, 6_000_000)
    s.close("close", fd)
    s.do("stat", meta, s.p("f"))
    s.do("read whole", read_all, s.p("f"))
    s.do("read whole, odd chunks", read_all, s.p("f"), 333_333)
    fd = s.open("reopen rdonly", s.p("f"), os.O_RDONLY)
    s.do("pread 0..1100", os.pread, fd, 1100, 0)
    s.do("pread tail", os.pread, fd, 100_000, 5_050_000)
    s.close("close 2", fd)


def sc_truncate_path(s):
    s.do("write 300000", write_all, s.p("f"), randbytes(3, 300_000))
    s.do("truncate to 100000", os.truncate, s.p("f"), 100_000)
    s.do("stat", meta, s.p("f"))
    s.do("read", read_all, s.p("f"))
    s.do("truncate up to 5000000", os.truncate, s.p("f"), 5_000_000)
    s.do("stat up", meta, s.p("f"))
    s.do("read up", read_all, s.p("f"))
    s.do("truncate to 0", os.truncate, s.p("f"), 0)
    s.do("stat 0", meta, s.p("f"))
    s.do("read 0", read_all, s.p("f"))
    s.do("truncate missing", os.truncate, s.p("missing"), 10)
    s.do("truncate negative", os.truncate, s.p("f"), -1)
    s.do("truncate a directory", lambda: (os.mkdir(s.p("d")), os.truncate(s.p("d"), 0)))


def sc_ftruncate(s):
    fd = s.open("create rdwr", s.p("f"), os.O_CREAT | os.O_RDWR)
    s.do("write 200000", os.write, fd, randbytes(4, 200_000))
    s.do("ftruncate 50000", os.ftruncate, fd, 50_000)
    s.do("fstat", fmeta, fd)
    s.do("pread after shrink", os.pread, fd, 100_000, 0)
    s.do("write at old offset (hole)", os.write, fd, b"tail")
    s.do("fstat 2", fmeta, fd)
    s.do("ftruncate up 3000000", os.ftruncate, fd, 3_000_000)
    s.do("pread zeros", os.pread, fd, 1000, 2_500_000)
    s.close("close", fd)
    s.do("stat", meta, s.p("f"))
    s.do("read", read_all, s.p("f"))
    fd = s.open("open rdonly", s.p("f"), os.O_RDONLY)
    s.do("ftruncate on rdonly fd", os.ftruncate, fd, 0)
    s.close("close 2", fd)


def sc_o_trunc(s):
    s.do("write 100000", write_all, s.p("f"), randbytes(5, 100_000))
    fd = s.open("open O_TRUNC", s.p("f"), os.O_WRONLY | os.O_TRUNC)
    s.do("fstat after O_TRUNC", fmeta, fd)
    s.do("stat after O_TRUNC", meta, s.p("f"))
    s.do("write 10", os.write, fd, b"0123456789")
    s.close("close", fd)
    s.do("read", read_all, s.p("f"))
    s.do("stat", meta, s.p("f"))
    fd = s.open("open O_TRUNC|O_CREAT existing", s.p("f"), os.O_WRONLY | os.O_TRUNC | os.O_CREAT)
    s.close("close 2", fd)
    s.do("read 2", read_all, s.p("f"))


def sc_o_append(s):
    s.do("write hello", write_all, s.p("f"), b"hello")
    fd = s.open("open O_APPEND", s.p("f"), os.O_WRONLY | os.O_APPEND)
    s.do("write abc", os.write, fd, b"abc")
    s.do("lseek 0", os.lseek, fd, 0, os.SEEK_SET)
    s.do("write def (still appends)", os.write, fd, b"def")
    s.close("close", fd)
    s.do("read", read_all, s.p("f"))
    fd1 = s.open("open O_APPEND #1", s.p("f"), os.O_WRONLY | os.O_APPEND)
    fd2 = s.open("open O_APPEND #2", s.p("f"), os.O_RDWR | os.O_APPEND)
    for i in range(6):
        s.do(f"write via #{i % 2 + 1}", os.write, fd1 if i % 2 == 0 else fd2, bytes([65 + i]) * (i + 1))
    s.do("pread via #2", os.pread, fd2, 100, 0)
    s.close("close #1", fd1)
    s.close("close #2", fd2)
    s.do("read 2", read_all, s.p("f"))
    fd = s.open("O_APPEND|O_CREAT new", s.p("g"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    s.do("write 2 MiB", os.write, fd, randbytes(6, 2 * MIB))
    s.do("write 2 MiB more", os.write, fd, randbytes(7, 2 * MIB))
    s.close("close 3", fd)
    s.do("read g", read_all, s.p("g"))


def sc_o_excl(s):
    s.do("write f", write_all, s.p("f"), b"x")
    s.open("O_CREAT|O_EXCL existing", s.p("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = s.open("O_CREAT|O_EXCL new", s.p("g"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    s.close("close", fd)
    s.open("O_CREAT|O_EXCL again", s.p("g"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.open("O_CREAT|O_EXCL on dir", s.p("d"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    s.open("O_CREAT on dir", s.p("d"), os.O_CREAT | os.O_WRONLY)
    s.do("listdir", lambda: sorted(os.listdir(s.root)))
    s.do("read f", read_all, s.p("f"))


def sc_open_missing(s):
    s.open("open missing rdonly", s.p("missing"), os.O_RDONLY)
    s.open("open missing wronly", s.p("missing"), os.O_WRONLY)
    s.do("stat missing", meta, s.p("missing"))
    s.do("lstat missing", meta, s.p("missing"), False)
    s.open("create in missing dir", s.p("nodir", "f"), os.O_CREAT | os.O_WRONLY)
    s.do("write f", write_all, s.p("f"), b"x")
    s.open("open f/x (file as dir)", s.p("f", "x"), os.O_RDONLY)
    s.open("create f/x", s.p("f", "x"), os.O_CREAT | os.O_WRONLY)
    s.do("listdir missing", os.listdir, s.p("missing"))
    s.do("listdir of a file", os.listdir, s.p("f"))
    s.do("exists missing", os.path.exists, s.p("missing"))
    s.open("O_DIRECTORY on a file", s.p("f"), os.O_RDONLY | os.O_DIRECTORY)
    s.open("write-open a directory", s.root, os.O_WRONLY)
    s.do("name too long", meta, s.p("x" * 300))


def sc_mkdir_rmdir(s):
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("mkdir d again", os.mkdir, s.p("d"))
    s.do("mkdir d/sub", os.mkdir, s.p("d", "sub"))
    s.do("write d/sub/f", write_all, s.p("d", "sub", "f"), b"data")
    s.do("rmdir d (non-empty)", os.rmdir, s.p("d"))
    s.do("rmdir d/sub (non-empty)", os.rmdir, s.p("d", "sub"))
    s.do("rmdir of a file", os.rmdir, s.p("d", "sub", "f"))
    s.do("mkdir over a file", os.mkdir, s.p("d", "sub", "f"))
    s.do("unlink d/sub/f", os.unlink, s.p("d", "sub", "f"))
    s.do("rmdir d/sub", os.rmdir, s.p("d", "sub"))
    s.do("listdir d", os.listdir, s.p("d"))
    s.do("rmdir d", os.rmdir, s.p("d"))
    s.do("stat d", meta, s.p("d"))
    s.do("rmdir missing", os.rmdir, s.p("d"))
    s.do("mkdir missing parent", os.mkdir, s.p("a", "b"))
    s.do("mkdir mode 0750", os.mkdir, s.p("m"), 0o750)
    s.do("stat m", meta, s.p("m"))
    s.do("makedirs deep", os.makedirs, s.p("x", "y", "z", "w"))
    s.do("stat deep", meta, s.p("x", "y", "z", "w"))
    s.do("rmdir . of dir", os.rmdir, s.p("m", "."))
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_unlink_dir(s):
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("unlink d", os.unlink, s.p("d"))
    s.do("stat d after", meta, s.p("d"))
    s.do("unlink missing", os.unlink, s.p("missing"))
    s.do("write f", write_all, s.p("f"), b"x")
    s.do("unlink f", os.unlink, s.p("f"))
    s.do("unlink f again", os.unlink, s.p("f"))
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_rename_over_file(s):
    a, b = randbytes(8, 150_000), randbytes(9, 70_000)
    s.do("write a", write_all, s.p("a"), a)
    s.do("write b", write_all, s.p("b"), b)
    s.do("rename a -> b", os.rename, s.p("a"), s.p("b"))
    s.do("stat a", meta, s.p("a"))
    s.do("read b", read_all, s.p("b"))
    s.do("stat b", meta, s.p("b"))
    s.do("rename b -> b", os.rename, s.p("b"), s.p("b"))
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("rename file over dir", os.rename, s.p("b"), s.p("d"))
    s.do("rename dir over file", os.rename, s.p("d"), s.p("b"))
    s.do("rename missing", os.rename, s.p("missing"), s.p("x"))
    s.do("rename into missing dir", os.rename, s.p("b"), s.p("nodir", "b"))
    s.do("rename into d/", os.rename, s.p("b"), s.p("d", "b2"))
    s.do("read d/b2", read_all, s.p("d", "b2"))
    # an open file renamed over: the old content stays readable through the fd
    s.do("write c", write_all, s.p("c"), b"old content")
    fd = s.open("open c", s.p("c"), os.O_RDONLY)
    s.do("write c2", write_all, s.p("c2"), b"new content!")
    s.do("rename c2 -> c", os.rename, s.p("c2"), s.p("c"))
    s.do("pread old fd", os.pread, fd, 100, 0)
    s.close("close", fd)
    s.do("read c", read_all, s.p("c"))
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_rename_dir(s):
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("mkdir d/sub", os.mkdir, s.p("d", "sub"))
    s.do("write d/x", write_all, s.p("d", "x"), randbytes(10, 40_000))
    s.do("write d/sub/y", write_all, s.p("d", "sub", "y"), b"yyy")
    s.do("rename d -> e", os.rename, s.p("d"), s.p("e"))
    s.do("stat d", meta, s.p("d"))
    s.do("listdir e", lambda: sorted(os.listdir(s.p("e"))))
    s.do("read e/x", read_all, s.p("e", "x"))
    s.do("read e/sub/y", read_all, s.p("e", "sub", "y"))
    s.do("write e/sub/z after rename", write_all, s.p("e", "sub", "z"), b"zz")
    s.do("read e/sub/z", read_all, s.p("e", "sub", "z"))
    s.do("rename e into its own subdir", os.rename, s.p("e"), s.p("e", "sub", "e"))
    s.do("mkdir empty", os.mkdir, s.p("empty"))
    s.do("rename e over empty dir", os.rename, s.p("e"), s.p("empty"))
    s.do("listdir empty", lambda: sorted(os.listdir(s.p("empty"))))
    s.do("read empty/sub/y", read_all, s.p("empty", "sub", "y"))
    s.do("mkdir other", os.mkdir, s.p("other"))
    s.do("move dir across parents", os.rename, s.p("empty", "sub"), s.p("other", "moved"))
    s.do("read other/moved/z", read_all, s.p("other", "moved", "z"))
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    AT_FDCWD = -100
    fn = getattr(_libc, "renameat2", None)
    if fn is not None:
        r = fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags))
    else:  # x86_64 syscall number
        r = _libc.syscall(316, AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)
    return r


def sc_rename_noreplace(s):
    s.do("write a", write_all, s.p("a"), b"aaaa")
    s.do("write b", write_all, s.p("b"), b"bb")
    s.do("renameat2 NOREPLACE a -> b", renameat2, s.p("a"), s.p("b"), 1)
    s.do("read a", read_all, s.p("a"))
    s.do("read b", read_all, s.p("b"))
    s.do("renameat2 NOREPLACE a -> c", renameat2, s.p("a"), s.p("c"), 1)
    s.do("read c", read_all, s.p("c"))
    s.do("stat a", meta, s.p("a"))
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("renameat2 NOREPLACE c -> d", renameat2, s.p("c"), s.p("d"), 1)
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_rename_dir_nonempty(s):
    s.do("mkdir a", os.mkdir, s.p("a"))
    s.do("write a/f", write_all, s.p("a", "f"), b"f")
    s.do("mkdir b", os.mkdir, s.p("b"))
    s.do("write b/g", write_all, s.p("b", "g"), b"g")
    s.do("rename a over non-empty b", os.rename, s.p("a"), s.p("b"))
    s.do("listdir a", lambda: sorted(os.listdir(s.p("a"))))
    s.do("listdir b", lambda: sorted(os.listdir(s.p("b"))))
    s.do("read b/g", read_all, s.p("b", "g"))


def sc_unlink_while_open(s):
    data = randbytes(11, 2 * MIB + 17)
    s.do("write f", write_all, s.p("f"), data)
    fd = s.open("open rdonly", s.p("f"), os.O_RDONLY)
    s.do("unlink", os.unlink, s.p("f"))
    s.do("stat after unlink", meta, s.p("f"))
    s.do("listdir after unlink", lambda: sorted(os.listdir(s.root)))
    s.do("read through fd", lambda: b"".join(iter(lambda: os.read(fd, MIB), b"")))
    s.do("fstat size", lambda: os.fstat(fd).st_size)
    s.close("close", fd)
    # written after the unlink, through a read-write fd
    fd = s.open("create g rdwr", s.p("g"), os.O_CREAT | os.O_RDWR)
    s.do("write g part 1", os.write, fd, b"before unlink;")
    s.do("unlink g", os.unlink, s.p("g"))
    s.do("write g part 2", os.write, fd, b"after unlink")
    s.do("pread g", os.pread, fd, 100, 0)
    s.do("create new g", write_all, s.p("g"), b"second g")
    s.do("pread old g", os.pread, fd, 100, 0)
    s.close("close g", fd)
    s.do("read new g", read_all, s.p("g"))
    s.do("listdir at end", lambda: sorted(os.listdir(s.root)))


def sc_recreate_while_writer_open(s):
    # A file unlinked (or renamed over) while a writer still has it open: closing that
    # writer must not bring its bytes back under the name, which now belongs to a new file.
    # Repeated because the outcome can depend on timing (FUSE release is asynchronous).
    wrong_unlink, wrong_open, wrong_rename = [], [], []
    for i in range(30):
        d = s.p(f"d{i}")
        os.mkdir(d)
        g = os.path.join(d, "g")
        fd = s.raw_open(g, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"old writer")
        os.unlink(g)
        os.write(fd, b" after unlink")
        write_all(g, b"new file")
        s.raw_close(fd)
        got = read_all(g)
        if got != b"new file":
            wrong_unlink.append((i, got))
        # the same with the new file still open (being written) when the old one closes
        k = os.path.join(d, "k")
        fd = s.raw_open(k, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"old writer")
        os.unlink(k)
        fd2 = s.raw_open(k, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd2, b"new file")
        s.raw_close(fd)
        s.raw_close(fd2)
        got = read_all(k)
        if got != b"new file":
            wrong_open.append((i, got))
        h = os.path.join(d, "h")
        fd = s.raw_open(h, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"old writer")
        write_all(os.path.join(d, "r"), b"renamed over")
        os.rename(os.path.join(d, "r"), h)
        os.write(fd, b" after rename")
        s.raw_close(fd)
        got = read_all(h)
        if got != b"renamed over":
            wrong_rename.append((i, got))
    s.note("iterations where unlink+recreate lost the new file", len(wrong_unlink))
    s.note("iterations where unlink+recreate (new still open) lost the new file", len(wrong_open))
    s.note("iterations where rename-over lost the new file", len(wrong_rename))
    for w in (wrong_unlink[:2] + wrong_open[:2] + wrong_rename[:2]):
        s.details.append(f"iteration {w[0]}: read {w[1]!r}")
    s.note("listing of the last dir", sorted(os.listdir(s.p("d29"))))


def sc_readdir_while_renaming(s):
    # ~19 KB of directory entries: a listing takes several FUSE readdir requests.
    stable = [f"s{i:03d}-" + "long-name-so-listings-span-several-pages-" * 2 for i in range(150)]
    movers = [f"m{i:02d}" for i in range(20)]
    valid = set(stable) | set(movers) | {f"n{i:02d}" for i in range(20)}
    for n in stable:
        open(s.p(n), "wb").close()
    for n in movers:
        with open(s.p(n), "wb") as f:
            f.write(n.encode())
    stop = threading.Event()
    errors = []

    def renamer():
        names = list(movers)
        try:
            while not stop.is_set():
                for i in range(len(names)):
                    new = ("n" if names[i][0] == "m" else "m") + names[i][1:]
                    os.rename(s.p(names[i]), s.p(new))
                    names[i] = new
        except OSError as e:
            errors.append(repr(e))

    t = threading.Thread(target=renamer)
    t.start()
    listings = garbage = missing_stable = dup_stable = 0
    end = time.monotonic() + 2.0
    try:
        while time.monotonic() < end and t.is_alive():
            names = os.listdir(s.root)
            listings += 1
            bad = [n for n in names if n not in valid]
            if bad:
                garbage += 1
                if len(s.details) < 5:
                    s.details.append(f"garbage names in listing: {bad[:5]}")
            present = set(names)
            lost = [n for n in stable if n not in present]
            if lost:
                missing_stable += 1
                if len(s.details) < 5:
                    s.details.append(f"{len(lost)} untouched entries missing, e.g. {lost[:3]}")
            if len(names) != len(present):
                dup_stable += 1
    finally:
        stop.set()
        t.join()
    s.note("renamer errors", errors)
    s.note("listings taken > 10", listings > 10)
    s.note("listings with garbage names", garbage)
    s.note("listings missing untouched entries", missing_stable)
    s.note("listings with duplicate names", dup_stable)
    final = sorted(os.listdir(s.root))
    s.note("final listing all valid", all(n in valid for n in final))
    s.note("final listing size", len(final))
    contents_ok = all(read_all(s.p(n))[1:] == n[1:].encode() for n in final if n[0] in "mn")
    s.note("movers keep their content", contents_ok)


def sc_mmap_read(s):
    data = randbytes(12, 3 * MIB + 4321)
    s.do("write f", write_all, s.p("f"), data)

    def map_read(path, off=0, length=0):
        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=off) as mm:
                return bytes(mm[:])

    s.do("mmap whole", map_read, s.p("f"))
    s.do("mmap whole == data", lambda: map_read(s.p("f")) == data)
    s.do("mmap at 1 MiB offset, 64 KiB", map_read, s.p("f"), MIB, 65536)
    s.do("mmap last page", lambda: map_read(s.p("f"), 3 * MIB, 0))

    def map_scattered(path):
        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return [mm[i:i + 16] for i in range(0, len(mm), 777_777)] + [mm[-5:]]

    s.do("mmap scattered slices", map_scattered, s.p("f"))
    s.do("mmap empty file", lambda: (write_all(s.p("e"), b""), map_read(s.p("e")))[1])


def sc_mmap_write(s):
    # np.memmap-style writers: a shared writable mapping, msync, close, read back.
    def map_write(path, size, patches):
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
                for off, data in patches:
                    mm[off:off + len(data)] = data
                mm.flush()
        finally:
            os.close(fd)

    size = 2 * MIB + 123
    patches = [(0, b"head"), (4096 * 3 + 5, randbytes(22, 10_000)), (size - 7, b"tail!!!"),
               (MIB, randbytes(23, 300_000))]
    s.do("mmap write new file", map_write, s.p("f"), size, patches)
    s.do("stat", meta, s.p("f"))
    s.do("read back", read_all, s.p("f"))
    s.do("write g", write_all, s.p("g"), randbytes(24, MIB))
    s.do("mmap patch existing file", map_write, s.p("g"), MIB, [(1000, b"patched")])
    s.do("read g", read_all, s.p("g"))


def sc_copy_tools(s):
    data = randbytes(25, 5 * MIB + 3)
    src_plain = os.path.join(os.path.dirname(os.path.dirname(s.root)), "copy-src.bin")
    if not os.path.exists(src_plain):
        write_all(src_plain, data)
    s.do("shutil.copyfile in (sendfile)", lambda: shutil.copyfile(src_plain, s.p("a")) and None)
    s.do("read a", read_all, s.p("a"))
    def run_cp(*args):
        r = subprocess.run(["cp", *args], capture_output=True, text=True, timeout=60)
        if r.returncode:
            s.details.append(f"cp {' '.join(args)}: {r.stderr.strip()[-300:]}")
        return r.returncode

    s.do("cp within the tree", run_cp, s.p("a"), s.p("b"))
    s.do("read b", read_all, s.p("b"))

    def cfr(src, dst):
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            left = os.fstat(fi.fileno()).st_size
            while left:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), left)
                if n == 0:
                    break
                left -= n
    try:
        s.do("copy_file_range within the tree", cfr, s.p("a"), s.p("c"))
        s.do("read c", read_all, s.p("c"))
    except AttributeError:
        pass
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("write d/x", write_all, s.p("d", "x"), b"x")
    s.do("cp -a of a directory", run_cp, "-a", s.p("d"), s.p("e"))
    s.do("listdir e", lambda: sorted(os.listdir(s.p("e"))))
    s.do("shutil.copyfile out", lambda: shutil.copyfile(s.p("b"), s.p("out")) and None)
    s.do("read out", read_all, s.p("out"))


def sc_fsync_second_process(s):
    data = randbytes(13, 2 * MIB + 5)
    fd = s.open("create", s.p("f"), os.O_CREAT | os.O_WRONLY)
    s.do("write", os.write, fd, data)
    s.do("fsync", os.fsync, fd)
    reader = ("import hashlib,sys;d=open(sys.argv[1],'rb').read();"
              "print(len(d),hashlib.sha256(d).hexdigest())")

    def child():
        r = subprocess.run([sys.executable, "-c", reader, s.p("f")], capture_output=True,
                           text=True, timeout=60)
        return (r.returncode, r.stdout.strip(), r.stderr.strip()[-300:])

    s.do("second process reads after fsync (fd still open)", child)
    s.note("expected", f"{len(data)} {hashlib.sha256(data).hexdigest()}")
    s.do("write more", os.write, fd, b"more")
    s.do("fdatasync", os.fdatasync, fd)
    s.do("second process after fdatasync", child)
    s.close("close", fd)
    s.do("second process after close", child)


def sc_symlink(s):
    s.do("write target", write_all, s.p("target"), b"target data")
    s.do("symlink rel", os.symlink, "target", s.p("l"))
    s.do("readlink", os.readlink, s.p("l"))
    s.do("lstat", meta, s.p("l"), False)
    s.do("stat through", meta, s.p("l"))
    s.do("read through", read_all, s.p("l"))
    s.do("symlink dangling", os.symlink, "nowhere/at/all", s.p("dangling"))
    s.do("stat dangling", meta, s.p("dangling"))
    s.do("lstat dangling", meta, s.p("dangling"), False)
    s.open("O_CREAT|O_EXCL on dangling", s.p("dangling"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    s.do("symlink onto existing", os.symlink, "x", s.p("target"))
    s.do("symlink abs", os.symlink, "/nonexistent/abs/path", s.p("abs"))
    s.do("readlink abs", os.readlink, s.p("abs"))
    s.do("readlink of a file", os.readlink, s.p("target"))
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("write d/in", write_all, s.p("d", "in"), b"in")
    s.do("symlink to dir", os.symlink, "d", s.p("ld"))
    s.do("listdir through link", lambda: sorted(os.listdir(s.p("ld"))))
    s.do("long target", os.symlink, "t" * 1000, s.p("long"))
    s.do("readlink long", os.readlink, s.p("long"))
    s.do("rename link", os.rename, s.p("l"), s.p("l2"))
    s.do("read via renamed link", read_all, s.p("l2"))
    s.do("unlink link", os.unlink, s.p("l2"))
    s.do("target still there", read_all, s.p("target"))
    s.do("write through link creates target", lambda: (os.symlink("made", s.p("lm")),
                                                         write_all(s.p("lm"), b"via link")))
    s.do("read made", read_all, s.p("made"))
    s.do("listdir", lambda: sorted(os.listdir(s.root)))


def sc_chmod(s):
    s.do("write f", write_all, s.p("f"), b"x", 0o644)
    s.do("stat 644", meta, s.p("f"))
    for m in (0o600, 0o755, 0o000, 0o640, 0o777, 0o4755):
        s.do(f"chmod {oct(m)}", os.chmod, s.p("f"), m)
        s.do(f"stat {oct(m)}", meta, s.p("f"))
    s.do("read as root at 04755", read_all, s.p("f"))
    fd = s.open("open", s.p("f"), os.O_RDONLY)
    s.do("fchmod 0444", os.fchmod, fd, 0o444)
    s.do("fstat", fmeta, fd)
    s.close("close", fd)
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("chmod dir 700", os.chmod, s.p("d"), 0o700)
    s.do("stat dir", meta, s.p("d"))
    s.do("chmod missing", os.chmod, s.p("missing"), 0o600)
    s.do("create with mode 0600", write_all, s.p("g"), b"g", 0o600)
    s.do("stat g", meta, s.p("g"))


def sc_utime_ns(s):
    s.do("write f", write_all, s.p("f"), b"data")
    t_a, t_m = 1_500_000_000_111_222_333, 1_600_000_000_444_555_666
    s.do("utime ns", os.utime, s.p("f"), ns=(t_a, t_m))
    s.do("mtime_ns", lambda: os.stat(s.p("f")).st_mtime_ns)
    s.do("utime whole seconds", os.utime, s.p("f"), ns=(1_400_000_000 * 10**9, 1_300_000_000 * 10**9))
    s.do("mtime_ns 2", lambda: os.stat(s.p("f")).st_mtime_ns)
    s.do("utime now", os.utime, s.p("f"))
    s.do("mtime now within 5 s", lambda: abs(os.stat(s.p("f")).st_mtime - time.time()) < 5)
    s.do("utime ns again", os.utime, s.p("f"), ns=(t_a, t_m))
    s.do("write after utime", write_all, s.p("f"), b"newer")
    s.do("write bumps mtime", lambda: abs(os.stat(s.p("f")).st_mtime - time.time()) < 5)
    fd = s.open("open", s.p("f"), os.O_RDONLY)
    s.do("futimens", os.utime, fd, ns=(t_a, t_m + 1))
    s.close("close", fd)
    s.do("mtime_ns via fd", lambda: os.stat(s.p("f")).st_mtime_ns)
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("utime dir", os.utime, s.p("d"), ns=(t_a, t_m + 2))
    s.do("dir mtime_ns", lambda: os.stat(s.p("d")).st_mtime_ns)
    s.do("utime missing", os.utime, s.p("missing"))
    s.do("write big", write_all, s.p("big"), randbytes(14, 3 * MIB))
    s.do("utime big", os.utime, s.p("big"), ns=(t_a, t_m + 3))
    s.do("read big", read_all, s.p("big"))
    s.do("big mtime_ns after read", lambda: os.stat(s.p("big")).st_mtime_ns)


def sc_xattrs(s):
    s.do("write f", write_all, s.p("f"), b"data")
    s.do("set user.a", os.setxattr, s.p("f"), "user.a", b"1")
    s.do("set user.b binary", os.setxattr, s.p("f"), "user.b", b"\x00bin\xff" * 10)
    s.do("set user.empty", os.setxattr, s.p("f"), "user.empty", b"")
    s.do("set user.big 4000", os.setxattr, s.p("f"), "user.big", randbytes(15, 4000))
    s.do("get user.a", os.getxattr, s.p("f"), "user.a")
    s.do("get user.b", os.getxattr, s.p("f"), "user.b")
    s.do("get user.empty", os.getxattr, s.p("f"), "user.empty")
    s.do("get user.big", os.getxattr, s.p("f"), "user.big")
    s.do("list", user_xattrs, s.p("f"))
    s.do("get missing", os.getxattr, s.p("f"), "user.missing")
    s.do("remove missing", os.removexattr, s.p("f"), "user.missing")
    s.do("XATTR_CREATE existing", os.setxattr, s.p("f"), "user.a", b"2", os.XATTR_CREATE)
    s.do("XATTR_REPLACE missing", os.setxattr, s.p("f"), "user.zz", b"2", os.XATTR_REPLACE)
    s.do("XATTR_REPLACE existing", os.setxattr, s.p("f"), "user.a", b"replaced", os.XATTR_REPLACE)
    s.do("get user.a replaced", os.getxattr, s.p("f"), "user.a")
    s.do("remove user.a", os.removexattr, s.p("f"), "user.a")
    s.do("get removed", os.getxattr, s.p("f"), "user.a")
    s.do("list after remove", user_xattrs, s.p("f"))
    s.do("size probe via ctypes (getxattr size 0)", lambda: _libc.getxattr(
        os.fsencode(s.p("f")), b"user.b", None, 0))
    s.do("xattrs survive rewrite (O_TRUNC)", lambda: (write_all(s.p("f"), b"new data"),
                                                     user_xattrs(s.p("f")))[1])
    s.do("rename f -> g", os.rename, s.p("f"), s.p("g"))
    s.do("xattrs survive rename", user_xattrs, s.p("g"))
    s.do("get after rename", os.getxattr, s.p("g"), "user.b")
    s.do("mkdir d", os.mkdir, s.p("d"))
    s.do("set on dir", os.setxattr, s.p("d"), "user.dir", b"dirval")
    s.do("get on dir", os.getxattr, s.p("d"), "user.dir")
    s.do("list on dir", user_xattrs, s.p("d"))
    s.do("get on missing file", os.getxattr, s.p("missing"), "user.a")
    s.do("name too long", os.setxattr, s.p("g"), "user." + "n" * 300, b"x")


def sc_large_20mb_chunks(s):
    n = 20 * MIB + 12_345
    data = randbytes(16, n)
    want = hashlib.sha256(data).hexdigest()
    fd = s.open("create", s.p("big"), os.O_CREAT | os.O_WRONLY)
    written = 0
    for off in range(0, n, MIB):
        written += os.write(fd, data[off:off + MIB])
    s.note("bytes written", written)
    s.close("close", fd)
    s.do("stat", meta, s.p("big"))
    s.do("sha256 (1 MiB reads) matches", lambda: sha_file(s.p("big")) == (want, n))
    s.do("sha256 (777777-byte reads) matches", lambda: sha_file(s.p("big"), 777_777) == (want, n))
    fd = s.open("open rdonly", s.p("big"), os.O_RDONLY)
    rnd = random.Random(17)
    spots = [(rnd.randrange(n), rnd.randrange(1, 300_000)) for _ in range(40)]
    s.do("40 random preads match", lambda: all(os.pread(fd, ln, off) == data[off:off + ln]
                                              for off, ln in spots))
    s.close("close 2", fd)


def sc_large_file_sha256(s):
    # ~48 MB of float32 "weights" (compressible in the high bytes), written cp-style in
    # 128 KiB writes, compared by sha256.
    rnd = random.Random(18)
    vals = [rnd.gauss(0, 0.02) for _ in range(1 << 16)]
    block = struct.pack(f"<{len(vals)}f", *vals)   # 256 KiB
    h = hashlib.sha256()
    fd = s.open("create", s.p("weights.bin"), os.O_CREAT | os.O_WRONLY)
    total = 0
    for i in range(192):
        piece = bytes((i * 7 + j) & 0xFF for j in range(64)) + block[64:]
        for off in range(0, len(piece), 128 * 1024):
            os.write(fd, piece[off:off + 128 * 1024])
        h.update(piece)
        total += len(piece)
    s.close("close", fd)
    s.do("size", lambda: os.path.getsize(s.p("weights.bin")) == total)
    s.do("sha256 matches", lambda: sha_file(s.p("weights.bin")) == (h.hexdigest(), total))


def sc_two_handles(s):
    fd1 = s.open("open #1 create rdwr", s.p("f"), os.O_CREAT | os.O_RDWR)
    fd2 = s.open("open #2 rdwr", s.p("f"), os.O_RDWR)
    s.do("write hello via #1", os.write, fd1, b"hello")
    s.do("pread via #2 before close", os.pread, fd2, 100, 0)
    s.do("fstat #2", fmeta, fd2)
    s.do("pwrite world@100 via #2", os.pwrite, fd2, b"world", 100)
    s.do("pread via #1", os.pread, fd1, 200, 0)
    s.do("stat path", meta, s.p("f"))
    fd3 = s.open("open #3 rdonly", s.p("f"), os.O_RDONLY)
    s.do("read via #3", os.read, fd3, 200)
    big = randbytes(19, 3 * MIB)
    s.do("write 3 MiB via #1", os.pwrite, fd1, big, 0)
    s.do("pread 3 MiB via #3", os.pread, fd3, 4 * MIB, 0)
    s.do("pread via #2 at 2 MiB", os.pread, fd2, 100, 2 * MIB)
    s.close("close #1", fd1)
    s.do("pread via #2 after #1 closed", os.pread, fd2, 4 * MIB, 0)
    s.do("pwrite via #2 after #1 closed", os.pwrite, fd2, b"tail", 3 * MIB)
    s.close("close #2", fd2)
    s.do("pread via #3 after both closed", os.pread, fd3, 4 * MIB + 10, 0)
    s.close("close #3", fd3)
    s.do("read", read_all, s.p("f"))


def sc_listdir_size_while_writing(s):
    fd = s.open("create", s.p("growing"), os.O_CREAT | os.O_WRONLY)
    s.do("write 3 MiB + 100", os.write, fd, randbytes(20, 3 * MIB + 100))
    s.do("name listed", lambda: "growing" in os.listdir(s.root))
    s.do("stat size while open", meta, s.p("growing"))
    s.do("scandir size while open", lambda: [(e.name, e.stat().st_size) for e in os.scandir(s.root)])
    s.do("write 1 MiB more", os.write, fd, randbytes(21, MIB))
    s.do("stat size 2", meta, s.p("growing"))
    s.do("second process sees size", lambda: subprocess.run(
        [sys.executable, "-c", "import os,sys;print(os.stat(sys.argv[1]).st_size)", s.p("growing")],
        capture_output=True, text=True, timeout=60).stdout.strip())
    s.close("close", fd)
    s.do("stat after close", meta, s.p("growing"))


SCENARIOS = [
    ("create_write_read", sc_create_write_read),
    ("pwrite_offsets_and_holes", sc_pwrite_holes),
    ("truncate_path", sc_truncate_path),
    ("ftruncate_open_fd", sc_ftruncate),
    ("o_trunc_existing", sc_o_trunc),
    ("o_append", sc_o_append),
    ("o_excl_existing", sc_o_excl),
    ("open_missing", sc_open_missing),
    ("mkdir_rmdir", sc_mkdir_rmdir),
    ("unlink_dir", sc_unlink_dir),
    ("rename_over_file", sc_rename_over_file),
    ("rename_dir", sc_rename_dir),
    ("rename_noreplace", sc_rename_noreplace),
    ("rename_dir_onto_nonempty", sc_rename_dir_nonempty),
    ("unlink_while_open", sc_unlink_while_open),
    ("recreate_while_writer_open", sc_recreate_while_writer_open),
    ("readdir_while_renaming", sc_readdir_while_renaming),
    ("mmap_read", sc_mmap_read),
    ("mmap_write_shared", sc_mmap_write),
    ("copy_tools", sc_copy_tools),
    ("fsync_then_second_process", sc_fsync_second_process),
    ("symlink_readlink_lstat", sc_symlink),
    ("chmod", sc_chmod),
    ("utime_ns", sc_utime_ns),
    ("xattrs_user", sc_xattrs),
    ("write_20mb_1mib_chunks", sc_large_20mb_chunks),
    ("large_file_sha256", sc_large_file_sha256),
    ("two_handles_same_file", sc_two_handles),
    ("listdir_size_while_writing", sc_listdir_size_while_writing),
]


# ---------------------------------------------------------------------------- running

class Watchdog:
    """Kills the daemon if a scenario hangs (a lost FUSE reply): blocked calls then fail
    with ENOTCONN instead of hanging the suite until meson's timeout."""

    def __init__(self, mount):
        self.mount = mount
        self.fired = None
        self._timer = None

    def arm(self, name, seconds):
        self.disarm()
        if self.mount is None:
            return

        def fire():
            self.fired = name
            print(f"WATCHDOG: scenario {name} still running after {seconds} s: killing the daemon",
                  flush=True)
            self.mount.kill()
        self._timer = threading.Timer(seconds, fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self):
        if self._timer:
            self._timer.cancel()
            self._timer = None


def run_side(root, name, fn):
    s = Side(os.path.join(root, name))
    s.do("mkdir scenario dir", os.mkdir, s.root)
    try:
        fn(s)
    except Exception as e:
        s.obs.append(("uncaught exception", ("exc", f"{type(e).__name__}: {e}")))
        s.details.append(traceback.format_exc(limit=3))
    finally:
        s.close_all()
    return s


def describe_diff(a, b, la="tpdefs", lb="plain"):
    lines = []
    for i in range(max(len(a.obs), len(b.obs))):
        x = a.obs[i] if i < len(a.obs) else ("<no step>", None)
        y = b.obs[i] if i < len(b.obs) else ("<no step>", None)
        if x != y:
            lines.append(f"    step {i} '{x[0]}': {la}={x[1]!r} | {lb}={y[1]!r}")
            if len(lines) >= 6:
                lines.append("    ...")
                break
    for d in a.details[:3]:
        lines.append(f"    {la} detail: {d.strip()}")
    for d in b.details[:3]:
        lines.append(f"    {lb} detail: {d.strip()}")
    return "\n" + "\n".join(lines)


def parity(res, name, fn, mroot, proot, mount, watchdog):
    if mount is not None and not mount.alive():
        res.check(name, False, "daemon is no longer running")
        return
    watchdog.arm(name, SCENARIO_TIMEOUT)
    t0 = time.monotonic()
    try:
        a = run_side(mroot, name, fn)
    finally:
        watchdog.disarm()
    b = run_side(proot, name, fn)
    dt = time.monotonic() - t0
    ok = a.obs == b.obs
    detail = "" if ok else describe_diff(a, b)
    if mount is not None and not mount.alive():
        ok = False
        detail += f"\n    daemon died during this scenario; log tail:\n{mount.log_text(2000)}"
    if dt > 5:
        print(f"  ({name} took {dt:.1f} s)", flush=True)
    res.check(name, ok, detail)


def snapshot(root):
    """Everything persistent in a tree, for the remount comparison."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            entry = {"mode": oct(st.st_mode)}
            if stat.S_ISREG(st.st_mode):
                entry["size"] = st.st_size
                entry["sha"] = sha_file(p)[0]
                entry["mtime_ns"] = st.st_mtime_ns
            elif stat.S_ISLNK(st.st_mode):
                entry["link"] = os.readlink(p)
            if not stat.S_ISLNK(st.st_mode):
                try:
                    entry["xattrs"] = {k: os.getxattr(p, k).hex() for k in user_xattrs(p)}
                except OSError as e:
                    entry["xattrs"] = errno.errorcode.get(e.errno)
            snap[rel] = entry
    return snap


def diff_snap(a, b, keys=None):
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if keys and x and y:
            x = {kk: x.get(kk) for kk in keys}
            y = {kk: y.get(kk) for kk in keys}
        if x != y:
            out.append(f"    {k}: before={x} after={y}")
            if len(out) >= 8:
                break
    return out


def tpdefs_specific(res, m):
    """Checks of documented tpdefs behaviour (not parity)."""
    root = os.path.join(m.mnt, "tpdefs_specific")
    os.mkdir(root)
    # Hard links: EPERM is allowed; if they work they must be real links.
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    write_all(a, b"linked")
    try:
        os.link(a, b)
        ok = read_all(b) == b"linked" and os.stat(a).st_nlink == 2
        res.check("hardlink_eperm_or_works", ok, f"link succeeded but b={read_all(b)!r} "
                  f"nlink={os.stat(a).st_nlink}")
    except OSError as e:
        res.check("hardlink_eperm_or_works", e.errno == errno.EPERM,
                  f"link failed with {errno.errorcode.get(e.errno)}, documented: EPERM")

    # Virtual xattrs on a file.
    f = os.path.join(root, "zeros.bin")
    write_all(f, bytes(8 * MIB))
    vals = {}
    errs = []
    for k in ("user.tpde.stored_size", "user.tpde.ratio", "user.tpde.parent", "user.tpde.chain"):
        try:
            vals[k] = os.getxattr(f, k)
        except OSError as e:
            errs.append(f"{k}: {errno.errorcode.get(e.errno)}")
    res.check("virtual_xattrs_readable", not errs, "; ".join(errs))
    listed = os.listxattr(f)
    want = {"user.tpde." + n for n in ("logical_size", "stored_size", "ratio", "parent", "chain",
                                       "depth", "version", "changed_fraction")}
    res.check("virtual_xattrs_listed", want <= set(listed), f"listxattr: {listed}")
    stored = None
    try:
        stored = int(vals.get("user.tpde.stored_size", b"").strip(b"\0 \n"))
    except ValueError:
        pass
    res.check("stored_size_is_integer", stored is not None,
              f"user.tpde.stored_size = {vals.get('user.tpde.stored_size')!r}")
    try:
        ratio = float(vals.get("user.tpde.ratio", b"").strip(b"\0 \n"))
        res.check("ratio_is_number", ratio > 0, f"ratio {ratio}")
    except ValueError:
        res.check("ratio_is_number", False, f"user.tpde.ratio = {vals.get('user.tpde.ratio')!r}")
    if stored is not None:
        # Stored sizes may shrink after the close (background re-encoding, deferred until
        # the store is idle): st_blocks and the xattr are compared at one instant,
        # compression is awaited up to the idle delay plus 20 s.
        def stored_now():
            return int(os.getxattr(f, "user.tpde.stored_size").strip(b"\0 \n"))
        wait_s = IDLE_COMPRESS_SECONDS + 20
        deadline = time.monotonic() + wait_s
        while True:
            a = stored_now()
            st = os.stat(f)
            b = stored_now()
            settled = a == b and abs(st.st_blocks * 512 - b) < 512  # attrs are cached ~1 s
            if (settled and b < st.st_size // 10) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        res.check("st_blocks_match_stored_size", settled,
                  f"st_blocks*512={st.st_blocks * 512} stored_size={a} then {b} ({wait_s} s wait)")
        res.check("zeros_compress", b < st.st_size // 10,
                  f"stored {b} of {st.st_size} bytes of zeros (after waiting {wait_s} s)")
    else:
        res.check("st_blocks_match_stored_size", False, "no stored_size")
        res.check("zeros_compress", False, "no stored_size")
    try:
        before_set = os.getxattr(f, "user.tpde.stored_size")
    except OSError as e:
        before_set = errno.errorcode.get(e.errno)
    rejected = []
    for op, call in (("setxattr", lambda: os.setxattr(f, "user.tpde.stored_size", b"1")),
                     ("removexattr", lambda: os.removexattr(f, "user.tpde.ratio"))):
        try:
            call()
            rejected.append(f"{op} succeeded")
        except OSError:
            pass
    res.check("virtual_xattrs_read_only", not rejected, "; ".join(rejected))
    try:
        after = os.getxattr(f, "user.tpde.stored_size")
        res.check("virtual_xattr_unchanged", after == before_set,
                  f"{before_set!r} before the rejected setxattr, {after!r} after")
    except OSError as e:
        res.check("virtual_xattr_unchanged", False, errno.errorcode.get(e.errno))

    chain_rotation(res, root)

    # Stats on the mount root.
    try:
        stats = json.loads(os.getxattr(m.mnt, "user.tpde.stats").rstrip(b"\0"))
        res.check("root_stats_json", isinstance(stats, dict), repr(stats)[:200])
    except (OSError, ValueError) as e:
        res.check("root_stats_json", False, repr(e))
    root_listed = os.listxattr(m.mnt)
    res.check("root_stats_listed", "user.tpde.stats" in root_listed, f"{root_listed}")

    try:
        sv = os.statvfs(m.mnt)
        res.check("statvfs", sv.f_bsize > 0 and sv.f_frsize > 0 and sv.f_namemax > 0,
                  f"bsize={sv.f_bsize} frsize={sv.f_frsize} namemax={sv.f_namemax}")
    except OSError as e:
        res.check("statvfs", False, repr(e))


def chain_rotation(res, root):
    """A keep-the-last-k rotation of one chain: whichever version is deleted (the oldest,
    or the one others are stored against), the remaining ones read back exactly."""
    rnd = random.Random(23)
    vals = [rnd.gauss(0, 0.02) for _ in range(1 << 18)]          # 1 MiB of float32
    shas = {}

    def write_step(k):
        for i in range(0, len(vals), 3):
            vals[i] += rnd.gauss(0, 1e-5)
        data = struct.pack(f"<{len(vals)}f", *vals) + b"tail%d" % k
        os.mkdir(os.path.join(root, f"step-{k}"))
        path = os.path.join(root, f"step-{k}", "model.bin")
        write_all(path, data)
        shas[k] = hashlib.sha256(data).hexdigest()

    def verify(keys):
        bad = []
        for k in keys:
            try:
                got = sha_file(os.path.join(root, f"step-{k}", "model.bin"))[0]
            except OSError as e:
                got = errno.errorcode.get(e.errno)
            if got != shas[k]:
                bad.append(f"step-{k}: {got[:16]} != {shas[k][:16]}")
        return bad

    for k in (1, 2, 3, 4):
        write_step(k)
    # Versions are delta-coded against each other (possibly in the background): some
    # version of the chain must name a parent within a few seconds.
    parents = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        parents = {}
        for k in (1, 2, 3, 4):
            try:
                parents[k] = os.getxattr(os.path.join(root, f"step-{k}", "model.bin"),
                                         "user.tpde.parent")
            except OSError as e:
                parents[k] = errno.errorcode.get(e.errno, str(e.errno)).encode()
                deadline = 0
        if deadline == 0:
            break
        if any(v.strip(b"\0") and not v.startswith(b"E") for v in parents.values()):
            break
        time.sleep(0.2)
    res.check("chain_versions_have_parents",
              any(v.strip(b"\0") and not v.startswith(b"E") for v in parents.values()),
              f"user.tpde.parent of step-1..4: {parents}")
    bad = verify((1, 2, 3, 4))
    shutil.rmtree(os.path.join(root, "step-1"))
    shutil.rmtree(os.path.join(root, "step-2"))
    write_step(5)
    shutil.rmtree(os.path.join(root, "step-3"))
    bad += verify((4, 5))
    shutil.rmtree(os.path.join(root, "step-5"))        # the newest: others' base, if reverse
    bad += verify((4,))
    write_step(6)
    bad += verify((4, 6))
    res.check("chain_rotation_deletes_keep_others_exact", not bad, "; ".join(bad))


def second_daemon_in_use(res, m, base, foreground):
    check = "second_daemon_same_store_in_use" + ("" if foreground else "_daemonizing")
    mnt2 = tempfile.mkdtemp(prefix="tpdefs-mnt2-", dir=base)
    proc = None
    try:
        proc = subprocess.Popen([m.tpdefs_bin, m.store, mnt2] + (["-f"] if foreground else []),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=set_pdeathsig)
        try:
            out, _ = proc.communicate(timeout=15)
            text = out.decode("utf-8", "replace").strip()
            res.check(check, proc.returncode != 0 and "in use" in text and not is_mounted(mnt2),
                      f"exit {proc.returncode}, output {text[-300:]!r}, mounted={is_mounted(mnt2)}")
        except subprocess.TimeoutExpired:
            res.check(check, False,
                      f"second daemon still running after 15 s (mounted={is_mounted(mnt2)})")
    finally:
        if is_mounted(mnt2):
            subprocess.run(["fusermount3", "-uz", mnt2], capture_output=True, timeout=15)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if not is_mounted(mnt2):
            os.rmdir(mnt2)


def main():
    global SCENARIOS
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    plain_mode = "--self-test-plain" in sys.argv
    only = [a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")]
    if only:   # debugging aid: --only=name[,name]: run just these scenarios
        SCENARIOS = [sc for sc in SCENARIOS if sc[0] in only[0]]
    if not args:
        print(__doc__)
        sys.exit(2)
    tpdefs = args[0]
    res = Results("mount_posix_parity", args[1] if len(args) > 1 else None)
    if not plain_mode:
        require_mount(res, tpdefs)
    base = tempfile.mkdtemp(prefix="tpdefs-parity-")
    proot = os.path.join(base, "plain")
    os.mkdir(proot)
    t_start = time.monotonic()
    try:
        if plain_mode:
            other = os.path.join(base, "other-plain")
            os.mkdir(other)
            wd = Watchdog(None)
            for name, fn in SCENARIOS:
                parity(res, name, fn, other, proot, None, wd)
            for n in ("tpdefs_specific", "second_daemon_in_use", "clean_unmount",
                      "remount_persistence", "sigterm_unmount", "daemonize"):
                res.skip_one(n, "--self-test-plain")
        else:
            run_mounted(res, tpdefs, base, proot)
    except Exception as e:
        res.check("run", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"total {time.monotonic() - t_start:.1f} s")
    res.finish()


def run_mounted(res, tpdefs, base, proot):
    store = None
    try:
        # Raw blocks written while the pool is busy are compressed once writes have
        # stopped for idle_compress_seconds (30 by default): a short delay lets
        # zeros_compress check that documented path within the test's wait.
        with mounted(tpdefs, base=base, keep_store=True,
                     opts=["--idle-compress-seconds", str(IDLE_COMPRESS_SECONDS)]) as m:
            store = m.store
            wd = Watchdog(m)
            for name, fn in SCENARIOS:
                parity(res, name, fn, m.mnt, proot, m, wd)
            if m.alive():
                wd.arm("tpdefs_specific", SCENARIO_TIMEOUT)
                try:
                    tpdefs_specific(res, m)
                except Exception as e:
                    res.check("tpdefs_specific", False, traceback.format_exc(limit=3) + repr(e))
                finally:
                    wd.disarm()
                second_daemon_in_use(res, m, base, foreground=True)
                second_daemon_in_use(res, m, base, foreground=False)
            before = None
            if m.alive():
                wd.arm("snapshot", SCENARIO_TIMEOUT)
                try:
                    before = snapshot(m.mnt)
                finally:
                    wd.disarm()
        res.check("clean_unmount", m.returncode == 0 and not m.teardown_notes,
                  f"daemon exit {m.returncode}; teardown: {m.teardown_notes}; log tail:\n"
                  f"{m.final_log[-2000:]}")
    except MountError as e:
        res.check("mount", False, str(e))
        return
    if before is None:
        res.check("remount_persistence", False, "daemon died before the snapshot")
        return
    try:
        with mounted(tpdefs, store_dir=store, base=base, watchdog=90) as m2:
            after = snapshot(m2.mnt)
            content = ["mode", "size", "sha", "link", "xattrs"]
            d = diff_snap(before, after, content)
            res.check("remount_persistence", not d and len(after) == len(before),
                      f"{len(before)} entries before, {len(after)} after\n" + "\n".join(d))
            d = diff_snap(before, after, ["mtime_ns"])
            res.check("remount_preserves_mtime", not d, "\n" + "\n".join(d))
            m2.proc.send_signal(15)
            try:
                rc = m2.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                rc = "still running after 15 s"
            # give the kernel a moment to drop the mount entry
            for _ in range(50):
                if not is_mounted(m2.mnt):
                    break
                time.sleep(0.1)
            res.check("sigterm_unmount", rc == 0 and not is_mounted(m2.mnt),
                      f"exit {rc}, still mounted={is_mounted(m2.mnt)}")
    except MountError as e:
        res.check("remount", False, str(e))
    daemonizing_mount(res, tpdefs, base)


def daemonizing_mount(res, tpdefs, base):
    """Without -f: the command returns 0 once the mount is usable, and the detached daemon
    goes away after fusermount3 -u."""
    work = tempfile.mkdtemp(prefix="tpdefs-bg-", dir=base)
    store, mnt = os.path.join(work, "store"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    try:
        r = subprocess.run([tpdefs, store, mnt], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30)
        mounted_now = is_mounted(mnt)
        usable = False
        if mounted_now:
            try:
                write_all(os.path.join(mnt, "f"), b"daemonized")
                usable = read_all(os.path.join(mnt, "f")) == b"daemonized"
            except OSError:
                pass
        res.check("daemonize_returns_when_mounted", r.returncode == 0 and mounted_now and usable,
                  f"exit {r.returncode}, mounted right after={mounted_now}, usable={usable}, "
                  f"stderr {r.stderr.strip()[-300:]!r}")
    except subprocess.TimeoutExpired:
        res.check("daemonize_returns_when_mounted", False, "tpdefs without -f did not return in 30 s")
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True, timeout=15)
        for _ in range(50):
            if not is_mounted(mnt):
                break
            time.sleep(0.1)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True, timeout=15)
        # the detached daemon must let go of the store: a new foreground mount must work
        try:
            with mounted(tpdefs, store_dir=store, base=base, timeout=10, watchdog=30) as m3:
                ok = read_all(os.path.join(m3.mnt, "f")) == b"daemonized"
            res.check("daemonized_daemon_released_store", ok and m3.returncode == 0,
                      f"content ok={ok}, exit {m3.returncode}")
        except (MountError, OSError) as e:
            res.check("daemonized_daemon_released_store", False, str(e)[:600])


if __name__ == "__main__":
    main()

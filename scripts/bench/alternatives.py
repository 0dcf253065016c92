#!/usr/bin/python3
"""alternatives.py -- tpdefs against every lossless alternative a user could pick.

Usage:
  alternatives.py PREV NEW [--reps 3] [--json OUT]   a consecutive pair of torch.save files
  alternatives.py --standalone FILE [...]            no reference (the first checkpoint of a run)
Options: --methods a,b,c (run only these; see --list), --skip-slow (no zstd -19 / xdelta3),
         --slow-reps N (reps of the slow CLI methods, default: --reps), --tmpdir DIR.
Env: TPDE=path/to/tpde (default: ../../build/tpde next to this script).

Every method's stored bytes are decoded and compared with NEW byte for byte (so per tensor
bit-exact, NaN payloads included) on every rep; a mismatch is printed as NOT LOSSLESS and
the exit status is 1. Sizes count everything a decoder needs besides PREV.

Two kinds of method:
  CLI     whole-file tools run as processes on files in a scratch directory (--tmpdir, default
          $TMPDIR or /tmp): zstd, xdelta3, tpde. Timed wall clock per command, so process
          start-up (1-3 ms) and reading/writing the files (page cache) are inside the time.
  tensor  in-process coders (Python + numpy + Debian's codec bindings) that work on the
          float tensors of the torch.save zip. The file is split into its float storages
          (the `data/N` records whose pickle type is Float/BFloat16/Half/DoubleStorage) and
          the rest (zip headers, data.pkl, version, integer and byte storages such as the RNG
          state). The rest, together with a table of 25 bytes per tensor (offset, length,
          element type, index of the matched PREV tensor, payload length), is compressed
          with zstd level 3 (the zstandard module); each float storage is coded by the
          method. Stored size = 4 + that zstd frame + all tensor payloads; decoding rebuilds
          the whole file from them and is compared with NEW. Timed from bytes in memory to
          bytes in memory (parsing the zip and pickle of NEW, and of PREV for delta coders,
          is inside the time; reading the files is not).
Tensors are matched to PREV's by state-dict path (the first pickle path that leads to the
storage, e.g. optimizer/state/3/exp_avg), as tpdefs does; a tensor with no match of the same
type and size is coded without reference by the delta coders (XOR: byte planes as
bytegroup; seed: raw).
MB/s = bytes(NEW) / 1e6 / seconds, one thread (blosc nthreads=1, zstd -T1, tpde -j 1; zstd
and tpde do their file I/O on a second thread, as their CLIs do by default).
"""
import argparse
import collections
import ctypes
import io
import json
import os
import pickle
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

try:
    import zstandard
    import blosc
    import zfpy
except ImportError as e:  # say which Debian package to install, not a traceback
    sys.exit(f"alternatives.py: {e}; install the Debian packages python3-zstandard "
             "python3-blosc python3-zfpy")

HERE = os.path.dirname(os.path.abspath(__file__))
TPDE = os.environ.get("TPDE", os.path.join(HERE, "..", "..", "build", "tpde"))


# ---- element types ------------------------------------------------------------------------------

class Kind:
    """A float element type: its code in the container table, width, field sizes."""

    def __init__(self, code, name, width, exp_bits, mant_bits, np_float):
        self.code, self.name, self.width = code, name, width
        self.exp_bits, self.mant_bits = exp_bits, mant_bits
        self.uint = np.dtype(f"<u{width}")
        self.np_float = np_float  # numpy float dtype of the same width, None for bf16


KINDS = [Kind(1, "f16", 2, 5, 10, np.dtype("<f2")), Kind(2, "bf16", 2, 8, 7, None),
         Kind(3, "f32", 4, 8, 23, np.dtype("<f4")), Kind(4, "f64", 8, 11, 52, np.dtype("<f8"))]
KIND_BY_CODE = {k.code: k for k in KINDS}
# The storage classes torch.save names in the pickle (same mapping as docs/formats.md).
STORAGE_KIND = {"HalfStorage": KINDS[0], "BFloat16Storage": KINDS[1],
                "FloatStorage": KINDS[2], "DoubleStorage": KINDS[3]}


# ---- torch.save zip -> float tensors -----------------------------------------------------------

class Tensor:
    """One float storage of the file: where its bytes are, its type, the path that names it."""

    def __init__(self, name, kind, offset, nbytes, shape):
        self.name, self.kind, self.offset, self.nbytes, self.shape = name, kind, offset, nbytes, shape

    @property
    def n(self):
        return self.nbytes // self.kind.width


class _StorageRef:
    def __init__(self, type_name, key, numel):
        self.type_name, self.key, self.numel = type_name, key, numel


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _Opaque:
    """Stands in for any other class the pickle names: keeps its arguments and state so the
    walk can still find tensors inside it, and runs none of its code."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # dict subclasses get SETITEMS
        self.__dict__.setdefault("items", []).append((key, value))

    def append(self, value):  # list subclasses get APPENDS
        self.__dict__.setdefault("appended", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("appended", []).extend(values)


def _opaque_class(module, name):
    return type(f"{module}.{name}", (_Opaque,), {})


class _Unpickler(pickle.Unpickler):
    """Reads data.pkl without torch and without running any class from it: tensors become
    _TensorRef, storages _StorageRef (one object per storage key, so shared storages such as
    tied weights are recognised), everything unknown _Opaque."""

    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return lambda storage, offset, size, stride, *rest: _TensorRef(storage, offset, size, stride)
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *rest: data
        if module == "torch" and name.endswith("Storage"):
            return name  # the persistent id carries it; only its name matters
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        return _opaque_class(module, name)

    def persistent_load(self, pid):
        # ('storage', storage class, key, location, numel): torch.save's only persistent id
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        type_name, key, numel = pid[1], str(pid[2]), pid[4]
        if key not in self.storages:
            self.storages[key] = _StorageRef(type_name if isinstance(type_name, str) else "?", key, numel)
        return self.storages[key]


def _walk(obj, path, found):
    """Yield (state-dict path, _TensorRef) in pickle order (dict insertion order)."""
    if isinstance(obj, _TensorRef):
        found.append((path, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, f"{path}/{k}" if path else str(k), found)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk(v, f"{path}/{i}" if path else str(i), found)
    elif isinstance(obj, _Opaque):
        for i, v in enumerate(obj.args):
            _walk(v, f"{path}/{i}", found)
        for attr in ("state", "items", "appended"):
            if hasattr(obj, attr):
                _walk(getattr(obj, attr), path, found)


def parse_checkpoint(data):
    """Float tensors of a torch.save (zip) file given as bytes, in file order. Anything that is
    not such a zip yields no tensors (all of it then counts as 'rest')."""
    if data[:4] != b"PK\x03\x04":
        return []
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    pkl = [i for i in infos if i.filename.endswith("data.pkl")]
    if len(pkl) != 1:
        return []
    root = pkl[0].filename[: -len("data.pkl")]
    up = _Unpickler(io.BytesIO(zf.read(pkl[0])))
    found = []
    _walk(up.load(), "", found)
    by_name = {i.filename: i for i in infos}
    first_path, view = {}, {}
    for path, t in found:  # a storage is named by the first path that leads to it
        if t.storage.key not in first_path:
            first_path[t.storage.key] = path
            view[t.storage.key] = t
    tensors = []
    for key, s in up.storages.items():
        kind = STORAGE_KIND.get(s.type_name)
        info = by_name.get(f"{root}data/{key}")
        if kind is None or info is None or info.compress_type != zipfile.ZIP_STORED:
            continue  # integer/byte storages, or a record we cannot address: part of the rest
        # The data starts after the *local* header, whose extra field (torch pads records to
        # 64-byte alignment there) differs from the central directory's.
        h = data[info.header_offset: info.header_offset + 30]
        name_len, extra_len = struct.unpack("<HH", h[26:30])
        offset = info.header_offset + 30 + name_len + extra_len
        if info.file_size != s.numel * kind.width or s.numel == 0:
            continue  # (zfp crashes on an empty array; an empty record is all header anyway)
        t = view.get(key)
        contiguous = (t is not None and t.offset == 0 and np.prod(t.size, dtype=np.int64) == s.numel
                      and t.stride == tuple(int(np.prod(t.size[i + 1:], dtype=np.int64)) for i in range(len(t.size))))
        shape = tuple(t.size) if contiguous and len(t.size) > 0 else (s.numel,)
        tensors.append(Tensor(first_path.get(key, f"#storage/{key}"), kind, offset, info.file_size, shape))
    tensors.sort(key=lambda t: t.offset)
    return tensors


def match(new_tensors, prev_tensors):
    """For each NEW tensor the index of PREV's tensor of the same path, type and size, or -1."""
    index = {t.name: i for i, t in enumerate(prev_tensors)}
    out = []
    for t in new_tensors:
        i = index.get(t.name, -1)
        ok = i >= 0 and prev_tensors[i].kind is t.kind and prev_tensors[i].nbytes == t.nbytes
        out.append(i if ok else -1)
    return out


# ---- the container shared by the tensor coders --------------------------------------------------

ZSTD3 = zstandard.ZstdCompressor(level=3)  # threads=0: single-threaded
ZSTD_D = zstandard.ZstdDecompressor()
TABLE_ENTRY = struct.Struct("<QQBiI")  # offset, nbytes, kind, PREV index (-1: none), payload length


def container_encode(coder, new, prev):
    """new, prev: bytes of the files (prev None without reference). Returns the stored bytes."""
    tensors = parse_checkpoint(new)
    if coder.needs_ref:
        prev_tensors = parse_checkpoint(prev)
        refs = match(tensors, prev_tensors)
    else:
        prev_tensors, refs = [], [-1] * len(tensors)
    items, table, rest, pos = [], [struct.pack("<I", len(tensors))], [], 0
    for t, r in zip(tensors, refs):
        x = np.frombuffer(new, t.kind.uint, t.n, t.offset)
        ref = None
        if r >= 0:
            p = prev_tensors[r]
            ref = np.frombuffer(prev, p.kind.uint, p.n, p.offset)
        items.append((x, t.kind, t.shape, ref))
        rest.append(new[pos:t.offset])
        pos = t.offset + t.nbytes
    rest.append(new[pos:])
    payloads = coder.encode_all(items)
    for t, r, payload in zip(tensors, refs, payloads):
        table.append(TABLE_ENTRY.pack(t.offset, t.nbytes, t.kind.code, r, len(payload)))
    meta = ZSTD3.compress(b"".join(table + rest))
    return b"".join([struct.pack("<I", len(meta)), meta] + payloads)


def container_decode(coder, blob, prev):
    (meta_len,) = struct.unpack_from("<I", blob, 0)
    meta = ZSTD_D.decompress(blob[4: 4 + meta_len])
    (count,) = struct.unpack_from("<I", meta, 0)
    entries = [TABLE_ENTRY.unpack_from(meta, 4 + i * TABLE_ENTRY.size) for i in range(count)]
    rest = memoryview(meta)[4 + count * TABLE_ENTRY.size:]
    prev_tensors = parse_checkpoint(prev) if coder.needs_ref and any(e[3] >= 0 for e in entries) else []
    out = np.empty(len(rest) + sum(e[1] for e in entries), np.uint8)
    rest = np.frombuffer(rest, np.uint8)
    items, at = [], 4 + meta_len
    for offset, nbytes, code, r, plen in entries:
        kind = KIND_BY_CODE[code]
        ref = None
        if r >= 0:
            p = prev_tensors[r]
            ref = np.frombuffer(prev, p.kind.uint, p.n, p.offset)
        items.append((memoryview(blob)[at: at + plen], kind, nbytes // kind.width, ref))
        at += plen
    rest_at = file_at = 0
    for (offset, nbytes, code, r, plen), (_, kind, _, _), x in zip(entries, items, coder.decode_all(items)):
        gap = offset - file_at  # rest bytes before this tensor
        out[file_at:offset] = rest[rest_at: rest_at + gap]
        rest_at += gap
        out[offset: offset + nbytes] = (x if isinstance(x, np.ndarray) else np.frombuffer(x, kind.uint)).view(np.uint8)
        file_at = offset + nbytes
    out[file_at:] = rest[rest_at:]
    return out.tobytes()


class Coder:
    """A tensor coder: encode(x, kind, shape, ref) -> payload, decode(payload, kind, n, ref) ->
    the elements (x, ref: unsigned arrays of the element width; ref None without a match).
    The *_all forms take every tensor of a file at once (the seed batches them)."""
    needs_ref = False

    def encode_all(self, items):
        return [self.encode(*it) for it in items]

    def decode_all(self, items):
        return [self.decode(*it) for it in items]


# ---- byte planes (shared by bytegroup and xor) --------------------------------------------------

def rotl1(x, kind):
    """Sign bit moved to the bottom (ZipNN): the exponent's top 8 bits become the top byte."""
    bits = kind.width * 8
    return (x << np.array(1, x.dtype)) | (x >> np.array(bits - 1, x.dtype))


def rotr1(x, kind):
    bits = kind.width * 8
    return (x >> np.array(1, x.dtype)) | (x << np.array(bits - 1, x.dtype))


def planes_encode(u, kind):
    """u: unsigned array. Each byte plane zstd -3 on its own, stored raw if that is no smaller
    (ZipNN keeps incompressible mantissa bytes raw too). Per plane: u8 mode, u32 length."""
    b = u.view(np.uint8).reshape(-1, kind.width)
    out = []
    for j in range(kind.width - 1, -1, -1):  # top (exponent) byte first
        plane = np.ascontiguousarray(b[:, j])
        c = ZSTD3.compress(plane.data)
        mode, body = (1, c) if len(c) < plane.nbytes else (0, plane.data)
        out += [struct.pack("<BI", mode, len(body)), body]
    return b"".join(out)


def planes_decode(payload, kind, n):
    b = np.empty((n, kind.width), np.uint8)
    at = 0
    for j in range(kind.width - 1, -1, -1):
        mode, length = struct.unpack_from("<BI", payload, at)
        body = payload[at + 5: at + 5 + length]
        at += 5 + length
        raw = ZSTD_D.decompress(body, max_output_size=n) if mode == 1 else body
        b[:, j] = np.frombuffer(raw, np.uint8, n)
    return b.view(kind.uint).reshape(n)


class ByteGroup(Coder):
    """ZipNN-style standalone coder: sign bit moved, bytes grouped by significance."""
    name = "bytegroup"
    settings = "sign bit moved, byte planes, zstd -3 per plane (raw if no gain)"
    needs_ref = False

    def encode(self, x, kind, shape, ref):
        return planes_encode(rotl1(x, kind), kind)

    def decode(self, payload, kind, n, ref):
        return rotr1(planes_decode(payload, kind, n), kind)


class XorPlanes(Coder):
    """BitX / ZipLLM-style delta: XOR with PREV's tensor, then byte planes as bytegroup."""
    name = "xor-planes"
    settings = "XOR vs PREV tensor, sign bit moved, byte planes, zstd -3 per plane"
    needs_ref = True

    def encode(self, x, kind, shape, ref):
        return planes_encode(rotl1(x ^ ref if ref is not None else x, kind), kind)

    def decode(self, payload, kind, n, ref):
        x = rotr1(planes_decode(payload, kind, n), kind)
        return x ^ ref if ref is not None else x


# ---- blosc ---------------------------------------------------------------------------------------

BLOSC_MAX = 2 ** 31 - 64 * 1024  # c-blosc 1 buffers must stay below 2 GiB; split larger tensors


class Blosc(Coder):
    """c-blosc 1 through Debian's python3-blosc, one tensor per buffer with typesize = the
    element width. Default row: bitshuffle, clevel 5 (the zarr / HDF5 filter default level).
    "blosc-best": byte shuffle, clevel 9, the best of {shuffle, bitshuffle} x {5, 9} on the
    8.4M-parameter checkpoints here (fp32 1.178 vs bitshuffle-5 1.141; bf16 1.438 vs 1.338)."""
    needs_ref = False

    def __init__(self, name="blosc", shuffle=blosc.BITSHUFFLE, clevel=5):
        blosc.set_nthreads(1)
        self.name, self.shuffle, self.clevel = name, shuffle, clevel
        self.settings = (f"c-blosc {blosc.blosclib_version.split()[0]}, "
                         f"{'bitshuffle' if shuffle == blosc.BITSHUFFLE else 'byte shuffle'}, zstd, "
                         f"clevel {clevel}, typesize = element size, nthreads 1")

    def encode(self, x, kind, shape, ref):
        raw, out = x.tobytes(), []
        for i in range(0, len(raw), BLOSC_MAX):
            c = blosc.compress(raw[i:i + BLOSC_MAX], typesize=kind.width, clevel=self.clevel,
                               shuffle=self.shuffle, cname="zstd")
            out += [struct.pack("<I", len(c)), c]
        return b"".join(out)

    def decode(self, payload, kind, n, ref):
        out, at = [], 0
        while at < len(payload):
            (length,) = struct.unpack_from("<I", payload, at)
            out.append(blosc.decompress(bytes(payload[at + 4: at + 4 + length])))
            at += 4 + length
        return b"".join(out)


# ---- fpzip and zfp (floats only: bf16 and f16 are widened to f32, exactly) ------------------------

def widen(x, kind):
    """f32/f64 as they are; bf16 -> f32 by putting its bits on top (exact); f16 -> f32 by numpy
    (exact for numbers; NaN payloads are checked by the byte compare like everything else)."""
    if kind.name == "bf16":
        return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if kind.name == "f16":
        return x.view(np.float16).astype(np.float32)
    return x.view(kind.np_float)


def narrow(f, kind):
    if kind.name == "bf16":
        return (f.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    if kind.name == "f16":
        return f.astype(np.float16).view(np.uint16)
    return f.view(kind.uint)


class _FPZ(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("prec", ctypes.c_int), ("nx", ctypes.c_int),
                ("ny", ctypes.c_int), ("nz", ctypes.c_int), ("nf", ctypes.c_int)]


def dims3(shape):
    """A tensor's shape as fpzip's (nx, ny, nz): the last dimension varies fastest; leading
    dimensions beyond three are folded into nz."""
    shape = [int(s) for s in shape] or [1]
    nx = shape[-1]
    ny = shape[-2] if len(shape) >= 2 else 1
    nz = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) >= 3 else 1
    return nx, ny, nz


class Fpzip(Coder):
    """fpzip 1.3 through Debian's libfpzip.so.1 (ctypes: the fpzip CLI would cost a process
    per tensor). Lossless: full precision for f32/f64; for widened bf16 / f16 the precision is
    the bits the narrow type has (16 / 19), which keeps every bit of it. Each tensor as a 1-D
    array: on the 8.4M-parameter checkpoints that beat giving fpzip the tensor's shape (fp32
    1.0798 vs 1.0784, bf16 1.174 vs 1.170); --fpzip-shape codes them 2-D/3-D instead."""
    name = "fpzip"
    settings = "lossless (full precision; bf16 as f32 prec 16, f16 as f32 prec 19), 1-D"
    use_shape = False
    needs_ref = False

    def __init__(self):
        lib = ctypes.CDLL("libfpzip.so.1")
        for fn, res, args in [("fpzip_write_to_buffer", ctypes.POINTER(_FPZ), [ctypes.c_void_p, ctypes.c_size_t]),
                              ("fpzip_write_header", ctypes.c_int, [ctypes.POINTER(_FPZ)]),
                              ("fpzip_write", ctypes.c_size_t, [ctypes.POINTER(_FPZ), ctypes.c_void_p]),
                              ("fpzip_write_close", None, [ctypes.POINTER(_FPZ)]),
                              ("fpzip_read_from_buffer", ctypes.POINTER(_FPZ), [ctypes.c_void_p]),
                              ("fpzip_read_header", ctypes.c_int, [ctypes.POINTER(_FPZ)]),
                              ("fpzip_read", ctypes.c_size_t, [ctypes.POINTER(_FPZ), ctypes.c_void_p]),
                              ("fpzip_read_close", None, [ctypes.POINTER(_FPZ)])]:
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        self.lib = lib

    def encode(self, x, kind, shape, ref):
        f = np.ascontiguousarray(widen(x, kind))
        prec = {"bf16": 16, "f16": 19}.get(kind.name, 0)  # 0 = full precision
        cap = f.nbytes * 2 + 1024  # fpzip can exceed the input on noise; never overflow
        buf = ctypes.create_string_buffer(cap)
        fpz = self.lib.fpzip_write_to_buffer(buf, cap)
        nx, ny, nz = dims3(shape if self.use_shape else (f.size,))
        fpz.contents.type = 1 if f.dtype == np.float64 else 0
        fpz.contents.prec, fpz.contents.nx, fpz.contents.ny = prec, nx, ny
        fpz.contents.nz, fpz.contents.nf = nz, 1
        ok = self.lib.fpzip_write_header(fpz)
        size = self.lib.fpzip_write(fpz, f.ctypes.data) if ok else 0
        self.lib.fpzip_write_close(fpz)
        if not size:
            raise RuntimeError("fpzip_write failed")
        return buf.raw[:size]

    def decode(self, payload, kind, n, ref):
        src = ctypes.create_string_buffer(bytes(payload), len(payload))
        fpz = self.lib.fpzip_read_from_buffer(src)
        if not self.lib.fpzip_read_header(fpz):
            raise RuntimeError("fpzip_read_header failed")
        f = np.empty(n, np.float64 if fpz.contents.type == 1 else np.float32)
        ok = self.lib.fpzip_read(fpz, f.ctypes.data)
        self.lib.fpzip_read_close(fpz)
        if not ok:
            raise RuntimeError("fpzip_read failed")
        return narrow(f, kind)


class Zfp(Coder):
    """zfp 1.0 reversible (lossless) mode through Debian's zfpy: compress_numpy without a
    tolerance, rate or precision selects it. Arrays keep the tensor's shape (zfp codes 4^d
    blocks; up to 4 dimensions, leading ones folded): on the 8.4M-parameter fp32 checkpoints
    1.0072 against 0.9966 as 1-D. bf16 / f16 are widened to f32: zfp has no 16-bit types, and
    their bit patterns as int32 did worse (bf16 0.770 against 0.986)."""
    name = "zfp"
    settings = "reversible mode, tensor shape (<= 4-D); bf16/f16 widened to f32"
    needs_ref = False

    def encode(self, x, kind, shape, ref):
        f = widen(x, kind)
        shape = [int(s) for s in shape] or [1]
        if len(shape) > 4:
            shape = [int(np.prod(shape[:-3], dtype=np.int64))] + shape[-3:]
        return zfpy.compress_numpy(np.ascontiguousarray(f.reshape(shape)))

    def decode(self, payload, kind, n, ref):
        return narrow(zfpy.decompress_numpy(bytes(payload)).reshape(n), kind)


# ---- the seed: changed positions as Elias-delta gaps + raw changed values -----------------------

SEED_CHUNK = 4096  # elements per independently decodable position stream (see SeedPositions)


def _bitlen(v):
    """floor(log2 v) + 1 for integers 1 <= v < 2**53, vectorised (frexp is exact there)."""
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def elias_delta_bits(gaps):
    """Length in bits of the Elias-delta code of each gap (>= 1): L + 2*floor(log2 L), with L
    the bit length of the gap."""
    L = _bitlen(gaps)
    return L + 2 * (_bitlen(L) - 1)


def chunk_gaps(pos, n):
    """Gaps of sorted changed positions, restarting at each SEED_CHUNK boundary (the first gap
    of a chunk counts from the chunk's start), and the number of changes per chunk."""
    chunk = pos // SEED_CHUNK
    gaps = np.diff(pos, prepend=-1)
    first = np.ones(len(pos), bool)
    first[1:] = chunk[1:] != chunk[:-1]
    gaps[first] = pos[first] - chunk[first] * SEED_CHUNK + 1
    counts = np.bincount(chunk, minlength=(n + SEED_CHUNK - 1) // SEED_CHUNK)
    return gaps, counts


def elias_delta_write(gaps, counts):
    """Bit streams, one per chunk, byte-aligned, MSB first. Code of g: N zeros, then L
    (N+1 bits), then the L-1 bits of g below its leading one; L = bitlen(g), N = bitlen(L)-1.
    Returns (stream bytes, byte length of each chunk's stream)."""
    L = _bitlen(gaps)
    N = _bitlen(L) - 1
    nbits = L + 2 * N
    # as an integer of width nbits (the N leading zeros are implicit in the width)
    code = (L.astype(np.uint64) << (L - 1).astype(np.uint64)) | (
        gaps.astype(np.uint64) - (np.uint64(1) << (L - 1).astype(np.uint64)))
    chunk_of = np.repeat(np.arange(len(counts)), counts)
    chunk_bits = np.bincount(chunk_of, weights=nbits, minlength=len(counts)).astype(np.int64)
    chunk_bytes = (chunk_bits + 7) // 8
    padded_start = np.concatenate([[0], np.cumsum(chunk_bytes)[:-1]]) * 8  # bit offset of each chunk
    unpadded_start = np.concatenate([[0], np.cumsum(chunk_bits)[:-1]])
    # bit offset of each code: its offset in one unpadded stream, moved to its chunk's stream
    start = np.cumsum(nbits) - nbits + (padded_start - unpadded_start)[chunk_of]
    bits = np.zeros(int(chunk_bytes.sum()) * 8, np.uint8)
    step = 1 << 18  # codes per batch: keeps the (batch, 64) bit matrices at 16 MiB
    for i in range(0, len(code), step):
        c, nb, s = code[i:i + step], nbits[i:i + step], start[i:i + step]
        m = np.unpackbits(c.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)  # (k, 64) MSB first
        valid = np.arange(64)[None, :] >= (64 - nb)[:, None]  # the low nbits bits of each row
        first = np.cumsum(nb) - nb  # index of each code's first bit among the valid bits
        target = np.repeat(s, nb) + np.arange(int(nb.sum())) - np.repeat(first, nb)
        bits[target] = m[valid]
    return np.packbits(bits).tobytes(), chunk_bytes


def elias_delta_read(stream, chunk_bytes, counts):
    """Decodes every chunk's stream at once: round i decodes the i-th code of all chunks that
    have one, in numpy (a sequential decoder in Python would take ~1 us per code)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    buf = np.frombuffer(bytes(stream) + bytes(8), np.uint8)
    nb = len(buf) - 7
    win = np.zeros(nb, np.uint64)  # the 64 bits starting at each byte, MSB first
    for k in range(8):
        win |= buf[k:k + nb].astype(np.uint64) << np.uint64(56 - 8 * k)
    order = np.argsort(-counts, kind="stable")  # busiest chunks first: round i uses a prefix
    sorted_counts = counts[order]
    starts = np.concatenate([[0], np.cumsum(chunk_bytes)[:-1]]).astype(np.uint64) * np.uint64(8)
    pos = starts[order]
    out_base = np.concatenate([[0], np.cumsum(counts)[:-1]])[order]  # where each chunk's gaps go
    gaps = np.empty(total, np.int64)
    # lanes still decoding in round i: those with more than i codes (a prefix, counts sorted)
    active = np.searchsorted(-sorted_counts, -np.arange(int(sorted_counts[0])), side="left")
    for i in range(int(sorted_counts[0])):
        a = active[i]
        p = pos[:a]
        w = win[p >> np.uint64(3)] << (p & np.uint64(7))
        # N = leading zeros of w; w >> 11 < 2**53 converts to float exactly
        N = (63 - 10 - np.frexp((w >> np.uint64(11)).astype(np.float64))[1]).astype(np.uint64)
        if N.max() > 5:  # no gap in a chunk needs more; the stream is damaged
            raise ValueError("bad Elias-delta stream")
        L = w >> (np.uint64(63) - np.uint64(2) * N)
        low = (w >> (np.uint64(64) - np.uint64(2) * N - L)) & ((np.uint64(1) << (L - np.uint64(1))) - np.uint64(1))
        gaps[out_base[:a] + i] = (low | (np.uint64(1) << (L - np.uint64(1)))).astype(np.int64)
        pos[:a] = p + np.uint64(2) * N + L
    # positions: per chunk, chunk start - 1 + running sum of its gaps
    csum = np.cumsum(gaps)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # index of each code's chunk's first code
    base = csum[first] - gaps[first]  # running sum before the chunk
    chunk_start_elem = np.repeat(np.arange(len(counts)) * SEED_CHUNK, counts)
    return chunk_start_elem - 1 + csum - base


class SeedPositions(Coder):
    """The project's seed idea in its plain form: positions of changed elements (bit pattern
    differs from PREV's) as Elias-delta gaps, the new values of those elements raw. The
    positions of each run of SEED_CHUNK elements form their own byte-aligned stream with a
    4-byte header (u16 changes, u16 stream bytes) so the numpy decoder can decode all chunks
    side by side; seed_sizes() gives the size with one stream per tensor. A numpy prototype:
    its speed says little about a compiled coder; its size is the point."""
    name = "seed"
    settings = f"Elias-delta gaps (streams of {SEED_CHUNK} elements) + raw changed values; numpy prototype"
    needs_ref = True

    def encode(self, x, kind, shape, ref):
        return self.encode_all([(x, kind, shape, ref)])[0]

    def decode(self, payload, kind, n, ref):
        return self.decode_all([(payload, kind, n, ref)])[0]

    def encode_all(self, items):
        # The chunks of all matched tensors are numbered in one index space (each tensor
        # starts at a chunk boundary), so one pass codes every tensor's positions: numpy's
        # cost per call, not per element, dominates a pass over a small tensor.
        parts, placed, nchunks = [], [], 0
        for x, kind, shape, ref in items:
            if ref is None:
                placed.append(None)
                continue
            pos = np.flatnonzero(x != ref)
            n_ch = -(-len(x) // SEED_CHUNK)
            parts.append(pos + nchunks * SEED_CHUNK)
            placed.append((nchunks, n_ch, pos))
            nchunks += n_ch
        allpos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        gaps, counts = chunk_gaps(allpos, nchunks * SEED_CHUNK)
        stream, chunk_bytes = elias_delta_write(gaps, counts)
        byte_at = np.concatenate([[0], np.cumsum(chunk_bytes)])
        out = []
        for (x, kind, shape, ref), p in zip(items, placed):
            if p is None:
                out.append(b"\x00" + x.tobytes())  # nothing to compare with: all raw
                continue
            c0, n_ch, pos = p
            header = np.empty((n_ch, 2), "<u2")
            header[:, 0], header[:, 1] = counts[c0:c0 + n_ch], chunk_bytes[c0:c0 + n_ch]
            out.append(b"".join([b"\x01", header.tobytes(), stream[byte_at[c0]:byte_at[c0 + n_ch]],
                                 x[pos].tobytes()]))
        return out

    def decode_all(self, items):
        # Mirror of encode_all: every tensor's chunk streams are decoded in one pass.
        heads, streams, parsed = [], [], []
        for payload, kind, n, ref in items:
            if payload[0] == 0:
                parsed.append(None)
                continue
            n_ch = -(-n // SEED_CHUNK)
            header = np.frombuffer(payload, "<u2", n_ch * 2, 1).reshape(-1, 2).astype(np.int64)
            slen = int(header[:, 1].sum())
            heads.append(header)
            streams.append(payload[1 + 4 * n_ch: 1 + 4 * n_ch + slen])
            parsed.append((int(header[:, 0].sum()), 1 + 4 * n_ch + slen))
        if heads:
            header = np.concatenate(heads)
            allpos = elias_delta_read(b"".join(streams), header[:, 1], header[:, 0])
        out, at, c0 = [], 0, 0
        for (payload, kind, n, ref), p in zip(items, parsed):
            if p is None:
                out.append(bytes(payload[1:]))
                continue
            changed, values_at = p
            pos = allpos[at: at + changed] - c0 * SEED_CHUNK
            at += changed
            c0 += -(-n // SEED_CHUNK)
            x = ref.copy()
            x[pos] = np.frombuffer(payload, kind.uint, changed, values_at)
            out.append(x)
        return out

    @staticmethod
    def size_formula(x, ref):
        """Exact payload size of encode() without writing bits (checked against it)."""
        if ref is None:
            return 1 + x.nbytes
        pos = np.flatnonzero(x != ref)
        gaps, counts = chunk_gaps(pos, len(x))
        chunk_bits = np.bincount(np.repeat(np.arange(len(counts)), counts),
                                 weights=elias_delta_bits(gaps), minlength=len(counts))
        return int(1 + 4 * len(counts) + ((chunk_bits.astype(np.int64) + 7) // 8).sum()
                   + len(pos) * x.itemsize)


def seed_sizes(new, prev):
    """Untimed check of the seed coder, tensor by tensor: encode() must be exactly as long as
    size_formula() and decode back to the tensor. Returns the tensor payload bytes of the
    chunked form and of one Elias-delta stream per tensor (4 bytes of change count +
    ceil(bits / 8) + raw values, no chunk headers; unmatched tensors raw + the same 1 byte)."""
    coder = SeedPositions()
    tensors, prev_tensors = parse_checkpoint(new), parse_checkpoint(prev)
    chunked = single = 0
    for t, r in zip(tensors, match(tensors, prev_tensors)):
        x = np.frombuffer(new, t.kind.uint, t.n, t.offset)
        ref = None
        if r >= 0:
            p = prev_tensors[r]
            ref = np.frombuffer(prev, p.kind.uint, p.n, p.offset)
        payload = coder.encode(x, t.kind, t.shape, ref)
        if len(payload) != coder.size_formula(x, ref):
            raise AssertionError(f"seed: size formula {coder.size_formula(x, ref)} != "
                                 f"{len(payload)} bytes written for {t.name}")
        back = coder.decode(memoryview(payload), t.kind, t.n, ref)
        if np.ascontiguousarray(back).view(np.uint8).tobytes() != x.tobytes():
            raise AssertionError(f"seed: {t.name} does not decode to itself")
        chunked += len(payload)
        if ref is None:
            single += 1 + t.nbytes
        else:
            pos = np.flatnonzero(x != ref)
            bits = int(elias_delta_bits(np.diff(pos, prepend=-1)).sum())
            single += 1 + 4 + (bits + 7) // 8 + len(pos) * t.kind.width
    return chunked, single


# ---- methods -------------------------------------------------------------------------------------

class TensorMethod:
    family = "tensor"

    def __init__(self, coder):
        self.coder, self.name, self.settings = coder, coder.name, coder.settings
        self.needs_ref = coder.needs_ref

    def encode(self, new, prev, work):
        return container_encode(self.coder, new, prev)

    def decode(self, blob, prev, work):
        return container_decode(self.coder, blob, prev)


class CliMethod:
    """A whole-file command line tool. enc/dec are argument lists with {prev} {new} {enc}
    {dec} placeholders; files live in the scratch directory."""
    family = "cli"

    def __init__(self, name, settings, enc, dec, needs_ref, slow=False):
        self.name, self.settings, self.enc, self.dec = name, settings, enc, dec
        self.needs_ref, self.slow = needs_ref, slow

    def _run(self, argv, paths):
        argv = [a.format(**paths) for a in argv]
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode().strip()[-300:]}")


def cli_methods():
    t = TPDE
    return [
        CliMethod("zstd-3", "zstd -3 -T1 (v1.5.4)", ["zstd", "-q", "-f", "-3", "-T1", "{new}", "-o", "{enc}"],
                  ["zstd", "-q", "-f", "-d", "{enc}", "-o", "{dec}"], False),
        CliMethod("zstd-19", "zstd -19 -T1", ["zstd", "-q", "-f", "-19", "-T1", "{new}", "-o", "{enc}"],
                  ["zstd", "-q", "-f", "-d", "{enc}", "-o", "{dec}"], False, slow=True),
        CliMethod("zstd-19-patch", "zstd -19 --long=27 --patch-from=PREV -T1",
                  ["zstd", "-q", "-f", "-19", "--long=27", "-T1", "--patch-from={prev}", "{new}", "-o", "{enc}"],
                  ["zstd", "-q", "-f", "-d", "--long=27", "--patch-from={prev}", "{enc}", "-o", "{dec}"],
                  True, slow=True),
        CliMethod("xdelta3-9", "xdelta3 -9 -s PREV (v3.0.11)", ["xdelta3", "-f", "-e", "-9", "-s", "{prev}", "{new}", "{enc}"],
                  ["xdelta3", "-f", "-d", "-s", "{prev}", "{enc}", "{dec}"], True, slow=True),
        CliMethod("tpde", "tpde encode --ref PREV -j 1", [t, "encode", "--ref", "{prev}", "{new}", "-o", "{enc}", "-j", "1"],
                  [t, "decode", "--ref", "{prev}", "{enc}", "-o", "{dec}", "-j", "1"], True),
        CliMethod("tpde-standalone", "tpde encode -j 1 (no reference)", [t, "encode", "{new}", "-o", "{enc}", "-j", "1"],
                  [t, "decode", "{enc}", "-o", "{dec}", "-j", "1"], False),
    ]


def all_methods():
    cli = cli_methods()
    tensor = [TensorMethod(c) for c in (Blosc(), Blosc("blosc-best", blosc.SHUFFLE, 9), Fpzip(), Zfp(), ByteGroup(), XorPlanes(), SeedPositions())]
    order = ["zstd-3", "zstd-19", "blosc", "blosc-best", "fpzip", "zfp", "bytegroup", "tpde-standalone",
             "zstd-19-patch", "xdelta3-9", "xor-planes", "seed", "tpde"]
    by_name = {m.name: m for m in cli + tensor}
    return [by_name[n] for n in order]


# ---- measuring -----------------------------------------------------------------------------------

def measure(method, new, prev, prev_path, new_path, work, reps):
    """Encode and decode `reps` times; every decode is compared with NEW. Returns a result dict."""
    res = {"method": method.name, "settings": method.settings, "family": method.family,
           "enc_s": [], "dec_s": [], "stored": None, "lossless": True, "error": None}
    try:
        for _ in range(reps):
            if method.family == "cli":
                paths = {"prev": prev_path or "", "new": new_path,
                         "enc": os.path.join(work, "enc"), "dec": os.path.join(work, "dec")}
                t0 = time.perf_counter()
                method._run(method.enc, paths)
                t1 = time.perf_counter()
                method._run(method.dec, paths)
                t2 = time.perf_counter()
                stored = os.path.getsize(paths["enc"])
                with open(paths["dec"], "rb") as f:
                    same = f.read() == new
                os.remove(paths["enc"])
                os.remove(paths["dec"])
            else:
                t0 = time.perf_counter()
                blob = method.encode(new, prev, work)
                t1 = time.perf_counter()
                out = method.decode(blob, prev, work)
                t2 = time.perf_counter()
                stored, same = len(blob), out == new
                del blob, out
            if res["stored"] is not None and stored != res["stored"]:
                raise RuntimeError(f"stored size differs between reps ({res['stored']} vs {stored})")
            res["stored"] = stored
            res["enc_s"].append(t1 - t0)
            res["dec_s"].append(t2 - t1)
            if not same:
                res["lossless"] = False
                break
    except Exception as e:  # reported in the table and in the exit status, never swallowed
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def describe(new, prev):
    """Counts that explain the table: float share of the file, changed elements."""
    tensors = parse_checkpoint(new)
    d = {"tensors": len(tensors), "float_bytes": sum(t.nbytes for t in tensors),
         "kinds": sorted({t.kind.name for t in tensors})}
    if prev is not None:
        pt = parse_checkpoint(prev)
        refs = match(tensors, pt)
        changed = elems = unmatched = 0
        for t, r in zip(tensors, refs):
            if r < 0:
                unmatched += t.nbytes
                continue
            x = np.frombuffer(new, t.kind.uint, t.n, t.offset)
            y = np.frombuffer(prev, pt[r].kind.uint, pt[r].n, pt[r].offset)
            changed += int(np.count_nonzero(x != y))
            elems += t.n
        d.update(matched_elements=elems, changed_elements=changed, unmatched_bytes=unmatched)
    return d


def fmt_speed(raw, secs):
    v = sorted(raw / 1e6 / s for s in secs)
    return f"{statistics.median(v):.0f} ({v[0]:.0f}–{v[-1]:.0f})" if len(v) > 1 else f"{v[0]:.0f}"


def print_table(report):
    raw = report["raw_bytes"]
    print(f"| method | settings | ratio | enc MB/s | dec MB/s |")
    print("|---|---|---:|---:|---:|")
    for r in report["results"]:
        if r["error"]:
            print(f"| {r['method']} | {r['settings']} | ERROR: {r['error']} | | |")
        elif not r["lossless"]:
            print(f"| {r['method']} | {r['settings']} | **NOT LOSSLESS** | | |")
        else:
            print(f"| {r['method']} | {r['settings']} | {raw / r['stored']:.3f} | "
                  f"{fmt_speed(raw, r['enc_s'])} | {fmt_speed(raw, r['dec_s'])} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("files", nargs="*", help="PREV NEW")
    ap.add_argument("--standalone", metavar="FILE", help="no reference: standalone methods on FILE")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slow-reps", type=int, default=None, help="reps of zstd -19 and xdelta3 (default --reps)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out zstd -19 and xdelta3")
    ap.add_argument("--methods", help="comma list of methods to run (default: all that apply)")
    ap.add_argument("--list", action="store_true", help="list the methods and exit")
    ap.add_argument("--fpzip-shape", action="store_true", help="fpzip: tensor shape as nx,ny,nz, not 1-D")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = ap.parse_args()

    Fpzip.use_shape = args.fpzip_shape
    if args.fpzip_shape:
        Fpzip.settings = Fpzip.settings.replace("1-D", "tensor shape as nx,ny,nz")
    methods = all_methods()
    if args.list:
        for m in methods:
            print(f"{m.name:16} {'delta' if m.needs_ref else 'standalone':10} {m.settings}")
        return 0
    if args.standalone:
        if args.files:
            ap.error("--standalone takes one FILE and no PREV NEW")
        prev_path, new_path = None, args.standalone
    elif len(args.files) == 2:
        prev_path, new_path = args.files
    else:
        ap.error("give PREV NEW, or --standalone FILE")
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    if prev_path is None:
        methods = [m for m in methods if not m.needs_ref]
    if args.skip_slow:
        methods = [m for m in methods if not getattr(m, "slow", False)]
    if args.methods:
        want = args.methods.split(",")
        unknown = set(want) - {m.name for m in all_methods()}
        if unknown:
            ap.error(f"unknown methods {sorted(unknown)} (see --list)")
        methods = [m for m in methods if m.name in want]
    if any(m.name.startswith("tpde") for m in methods) and not os.access(TPDE, os.X_OK):
        sys.exit(f"alternatives.py: tpde not found at {TPDE} (build with ./scripts/setup.sh or set TPDE=)")
    for tool in {"zstd", "xdelta3"} & {m.enc[0] for m in methods if m.family == "cli"}:
        if shutil.which(tool) is None:
            sys.exit(f"alternatives.py: {tool} not in PATH (Debian package {tool})")

    with open(new_path, "rb") as f:
        new = f.read()
    prev = None
    if prev_path is not None:
        with open(prev_path, "rb") as f:
            prev = f.read()
    report = {"prev": prev_path, "new": new_path, "raw_bytes": len(new), "reps": args.reps,
              "host": platform.node(), "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(),
              "info": describe(new, prev), "results": []}
    work = tempfile.mkdtemp(prefix="alternatives.", dir=args.tmpdir)
    try:
        for m in methods:
            reps = args.slow_reps if getattr(m, "slow", False) and args.slow_reps else args.reps
            r = measure(m, new, prev, prev_path, new_path, work, reps)
            report["results"].append(r)
            status = r["error"] or ("ok" if r["lossless"] else "NOT LOSSLESS")
            ratio = f"ratio {len(new) / r['stored']:.3f}" if r["stored"] else ""
            print(f"  {m.name}: {status} {ratio}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()

    info = report["info"]
    print(f"NEW {new_path} ({len(new)} bytes)" + (f", PREV {prev_path}" if prev_path else ", standalone"))
    print(f"{info['tensors']} float tensors ({', '.join(info['kinds'])}), "
          f"{100 * info['float_bytes'] / len(new):.2f}% of the bytes" +
          (f"; {100 * info['changed_elements'] / max(1, info['matched_elements']):.2f}% of the matched "
           f"elements changed, {info['unmatched_bytes']} bytes unmatched" if prev is not None else ""))
    print(f"reps {args.reps}" + (f" (slow CLI methods {args.slow_reps})" if args.slow_reps else "") +
          f"; MB/s median (min–max) over reps; load average {report['loadavg_start'][0]:.1f} at start\n")
    print_table(report)
    seed = next((r for r in report["results"] if r["method"] == "seed" and r["stored"]), None)
    if seed is not None:
        # The seed's size with one position stream per tensor: the chunked form measured
        # above, its tensor payloads swapped for the single-stream ones.
        chunked, single = seed_sizes(new, prev)
        report["seed_single_stream_stored"] = seed["stored"] - chunked + single
        print(f"\nseed: encode length = size formula and round trip checked per tensor; with one "
              f"position stream per tensor (no chunk headers; size only) the ratio would be "
              f"{len(new) / report['seed_single_stream_stored']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    bad = [r["method"] for r in report["results"] if r["error"] or not r["lossless"]]
    if bad:
        print(f"alternatives.py: failed (error or not lossless): {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

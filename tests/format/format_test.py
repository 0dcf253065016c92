#!/usr/bin/python3
"""Checkpoint-format awareness with real files: torch.save (Debian's python3-torch),
safetensors (written by a small writer here), numpy npy/npz. For each: `tpde segments` finds
the layout and element types, and encode/decode round-trips bit-exact. A pair whose pickle
grew (every tensor shifted by 64 bytes) must compress about as well as an unshifted pair.

Usage: format_test.py PATH_TO_TPDE [RESULTS_DIR]. Skips (exit 77) without torch or numpy.
"""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

TPDE = sys.argv[1]
RESULTS = sys.argv[2] if len(sys.argv) > 2 else None
passed, failed, failures = 0, 0, []


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        failures.append(name)
        print(f"FAIL {name} {detail}")


def finish(skipped=0):
    if RESULTS:
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "format.count"), "w") as f:
            f.write(f"{passed} {failed} {skipped}\n")
    print(f"format: {passed} passed, {failed} failed {' '.join(failures)}")
    sys.exit(1 if failed else 0)


try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIP: python3-torch/numpy not available ({e})")
    if RESULTS:
        os.makedirs(RESULTS, exist_ok=True)
        open(os.path.join(RESULTS, "format.count"), "w").write("0 0 1\n")
    sys.exit(77)

torch.manual_seed(0)
work = tempfile.mkdtemp(prefix="tpde-format-")


def tpde(*args, check_rc=True):
    r = subprocess.run([TPDE, *args], capture_output=True, text=True, errors="replace")
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"tpde {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def segments_full(path, *extra):
    """(kind, [(offset, length, type, row bytes or None, name, checkpoint name or "")])"""
    out = tpde("segments", *extra, path).stdout.splitlines()
    kind = out[0].split()[1]
    segs = []
    for line in out[1:]:
        off, length, typ, rows, rest = line.split(None, 4)
        name, _, tensor = rest.partition(" = ")
        segs.append((int(off), int(length), typ, None if rows == "-" else int(rows), name, tensor))
    return kind, segs


def segments(path):
    kind, segs = segments_full(path)
    return kind, [(s[0], s[1], s[2], s[4]) for s in segs]


def roundtrip(name, new, prev=None):
    enc = os.path.join(work, name + ".tpde")
    dec = os.path.join(work, name + ".out")
    ref = ["--ref", prev] if prev else []
    tpde("encode", *ref, new, "-o", enc)
    tpde("decode", *ref, enc, "-o", dec)
    same = open(new, "rb").read() == open(dec, "rb").read()
    check(f"roundtrip_{name}", same)
    return os.path.getsize(enc)


def model(step):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(step):
        loss = m(torch.randn(16, 64)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, opt


# 1. torch.save of a state dict, a full training state and nested containers.
m1, o1 = model(3)
m2, o2 = model(4)
paths = {}
for tag, (m, o) in {"a": (m1, o1), "b": (m2, o2)}.items():
    p = os.path.join(work, f"state_{tag}.pt")
    torch.save(m.state_dict(), p)
    paths[f"state_{tag}"] = p
    p = os.path.join(work, f"full_{tag}.pt")
    torch.save({"model": m.state_dict(), "optimizer": o.state_dict(), "step": 4,
                "rng": torch.get_rng_state()}, p)
    paths[f"full_{tag}"] = p
    p = os.path.join(work, f"nested_{tag}.pt")
    torch.save({"list": [m.state_dict(), {"bf16": m[0].weight.detach().to(torch.bfloat16),
                                          "half": m[2].weight.detach().half(),
                                          "ints": torch.arange(100)}],
                "tuple": (1.5, "text", torch.ones(3, dtype=torch.float64))}, p)
    paths[f"nested_{tag}"] = p

kind, segs = segments(paths["state_b"])
check("torch_layout", kind == "torch-zip", kind)
names = [s[3] for s in segs]
check("torch_record_names_without_root", "data.pkl" in names and "data/0" in names, names[:6])
check("torch_f32_types", all(s[2] == "f32" for s in segs if s[3].startswith("data/") and "#" not in s[3]))
check("torch_segments_cover_file",
      sum(s[1] for s in segs) == os.path.getsize(paths["state_b"]) and
      all(a[0] + a[1] == b[0] for a, b in zip(segs, segs[1:])))
kind, segs = segments(paths["nested_b"])
types = {s[2] for s in segs if s[3].startswith("data/") and "#" not in s[3]}
check("torch_nested_types", {"f32", "bf16", "f16", "f64"} <= types and "-" in types, types)
kind, segs = segments(paths["full_b"])
check("torch_full_state", kind == "torch-zip" and len(segs) > 20)
for base in ("state", "full", "nested"):
    roundtrip(base + "_delta", paths[base + "_b"], paths[base + "_a"])
    roundtrip(base + "_alone", paths[base + "_b"])

# 2. Shifted pair: the second file's pickle grew (a longer string), so every tensor after it
# moves; matching by name must keep the delta as good as the unshifted pair's.
big_a, _ = model(20)
big_b, _ = model(21)
for tag, m, note in (("p", big_a, "x"), ("q", big_b, "x"), ("r", big_b, "x" * 200)):
    torch.save({"note": note, "model": m.state_dict()}, os.path.join(work, f"shift_{tag}.pt"))
p, q, r = (os.path.join(work, f"shift_{t}.pt") for t in "pqr")
check("shift_changes_offsets", segments(q)[1][4][0] != segments(r)[1][4][0])
unshifted = roundtrip("unshifted", q, p)
shifted = roundtrip("shifted", r, p)
check("shifted_within_2pct", shifted <= unshifted * 1.02, f"{shifted} vs {unshifted}")
fixed = os.path.join(work, "fixed.tpde")
tpde("encode", "--no-segments", "--ref", p, r, "-o", fixed)
check("fixed_blocks_lose_on_shift", os.path.getsize(fixed) > shifted * 1.2,
      f"{os.path.getsize(fixed)} vs {shifted}")

# 3. safetensors, from a small writer (the python package is not in Debian).
def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    dtypes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 \
            else t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


for tag, m in (("a", m1), ("b", m2)):
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    sd["emb.bf16"] = m[0].weight.detach().to(torch.bfloat16)
    sd["steps"] = torch.arange(10)
    write_safetensors(os.path.join(work, f"st_{tag}.safetensors"), sd, {"format": "pt"})
sa, sb = (os.path.join(work, f"st_{t}.safetensors") for t in "ab")
kind, segs = segments(sb)
types = {s[3]: s[2] for s in segs}
check("safetensors_layout", kind == "safetensors", kind)
check("safetensors_types", types.get("0.weight") == "f32" and types.get("emb.bf16") == "bf16" and
      types.get("steps") == "-", types)
roundtrip("safetensors", sb, sa)

# 4. numpy npy / npz.
for tag, m in (("a", m1), ("b", m2)):
    w = m[0].weight.detach().numpy()
    np.save(os.path.join(work, f"w_{tag}.npy"), w)
    np.savez(os.path.join(work, f"w_{tag}.npz"), w=w, b=m[0].bias.detach().numpy().astype(np.float16))
kind, segs = segments(os.path.join(work, "w_b.npy"))
check("npy_layout", kind == "npy" and any(s[3] == "data" and s[2] == "f32" for s in segs), segs)
kind, segs = segments(os.path.join(work, "w_b.npz"))
types = {s[3]: s[2] for s in segs}
check("npz_layout", kind == "npz" and types.get("w.npy") == "f32" and types.get("b.npy") == "f16", types)
roundtrip("npy", os.path.join(work, "w_b.npy"), os.path.join(work, "w_a.npy"))
roundtrip("npz", os.path.join(work, "w_b.npz"), os.path.join(work, "w_a.npz"))

# 5. DCP-like .distcp: a concatenation of torch.save archives (one per item).
for tag, m in (("a", m1), ("b", m2)):
    with open(os.path.join(work, f"__0_{tag}.distcp"), "wb") as f:
        for v in m.state_dict().values():
            buf = io.BytesIO()
            torch.save(v, buf)
            f.write(buf.getvalue())
kind, segs = segments(os.path.join(work, "__0_b.distcp"))
check("distcp_layout", kind == "distcp" and any(s[3].startswith("item3/data/") for s in segs), kind)
roundtrip("distcp", os.path.join(work, "__0_b.distcp"), os.path.join(work, "__0_a.distcp"))

# 6. The stream segmenter (what a writer sees, bytes in order, in chunks) ends with the
# same layout as the whole-file parser, for every file above.
def layout_lines(path, *extra):
    return tpde("segments", *extra, path).stdout


for f in sorted(os.listdir(work)):
    path = os.path.join(work, f)
    if not os.path.isfile(path) or f.endswith((".tpde", ".out")) or f.endswith(".npz"):
        continue
    whole = layout_lines(path)
    for chunk in ("1", "4096", "1048576"):
        if chunk == "1" and os.path.getsize(path) > 200000:
            continue
        check(f"stream_{f}_{chunk}", layout_lines(path, "--stream", chunk) == whole)

# 7. State-dict changes that renumber torch.save's storages (tests/format/naming_cases.py):
# each modified pair round-trips bit-exact and compresses within 1% of its unchanged pair,
# because storages are matched by the path that names them in the checkpoint.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_writer  # noqa: E402
import naming_cases  # noqa: E402


class TinyGPT(torch.nn.Module):
    def __init__(self, vocab=512, d=96, layers=3):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(32, d)
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict(
            {"ln": torch.nn.LayerNorm(d), "fc": torch.nn.Linear(d, 4 * d), "out": torch.nn.Linear(4 * d, d)})
            for _ in range(layers))
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        for b in self.blocks:
            h = h + b["out"](torch.relu(b["fc"](b["ln"](h))))
        return self.head(h)


def trained_states(steps):
    torch.manual_seed(1)
    m = TinyGPT()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    out = {}
    for step in range(1, max(steps) + 1):
        x = torch.randint(0, 512, (8, 32))
        loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in steps:
            buf = io.BytesIO()  # a deep copy, as a checkpoint on disk is
            torch.save({"model": m.state_dict(), "optimizer": opt.state_dict(), "step": step}, buf)
            buf.seek(0)
            out[step] = torch.load(buf)
    return out


def stats_rows(prev, new):
    """{segment name: (match, ratio)} from `tpde stats`."""
    rows = {}
    for line in tpde("stats", prev, new).stdout.splitlines()[2:]:
        parts = line.split()
        if len(parts) < 8 or parts[0] == "total":
            continue
        rows[" ".join(parts[:-7])] = (parts[-6], float(parts[-1]))
    return rows


def pair_ratio(name, new, prev):
    return os.path.getsize(new) / roundtrip(name, new, prev)


states = trained_states((30, 35))
prev_state, new_state = states[30], states[35]
naming_ratios = []
for case, prep, modify, reference in naming_cases.CASES:
    tag = "".join(c if c.isalnum() else "_" for c in case)
    d = os.path.join(work, "naming", tag)
    files = {k: os.path.join(d, k, "ckpt.pt") for k in ("prev", "new", "ref_prev", "ref_new")}
    for f in files.values():
        os.makedirs(os.path.dirname(f), exist_ok=True)
    check(f"naming_{tag}_applies",
          naming_cases.write_case(prev_state, new_state, prep, modify, reference, files))
    base = pair_ratio(f"naming_{tag}_base", files["ref_new"], files["ref_prev"])
    got = pair_ratio(f"naming_{tag}", files["new"], files["prev"])
    naming_ratios.append((case, base, got))
    check(f"naming_{tag}_within_1pct", got >= base * 0.99, f"{got:.4f} vs unchanged {base:.4f}")
    kind, segs = segments_full(files["new"])
    _, streamed = segments_full(files["new"], "--stream", "4096")
    check(f"naming_{tag}_stream_names", streamed == segs)
    tensors = {s[5]: s for s in segs if s[5] and "#" not in s[5]}
    # Tensors of a block of their own (smaller ones share one with their neighbours).
    large = {n for n, s in tensors.items() if s[1] >= 4096}
    rows = stats_rows(files["prev"], files["new"])
    if case == "inserted at the front":
        first = next(s for s in segs if s[4] == "data/0")
        check("naming_inserted_is_data_0", first[5] == "model.adapter.inserted.weight", first)
        check("naming_paths_nested", "model.blocks.1.fc.weight" in tensors and
              "optimizer.state.3.exp_avg_sq" in tensors and "optimizer.state.0.step" in tensors,
              sorted(tensors)[:8])
        moved = [n for n in large if n.startswith(("model.", "optimizer.")) and "inserted" not in n]
        check("naming_moved_tensors_match_by_name", all(rows[n][0] == "name" for n in moved),
              [(n, rows[n]) for n in moved if rows[n][0] != "name"][:4])
        # tpde segments --ref says the same per segment (a match column before the names).
        with_ref = {}
        for line in tpde("segments", "--ref", files["prev"], files["new"]).stdout.splitlines()[1:]:
            off, length, typ, rows, match, rest = line.split(None, 5)
            with_ref[rest.partition(" = ")[2]] = match
        check("naming_segments_ref_match", with_ref.get("model.tok.weight") == "name" and
              with_ref.get("model.adapter.inserted.weight") == "offset", with_ref.get("model.tok.weight"))
    if case == "keys renamed (module. prefix)":
        renamed = [n for n in large if n.startswith("model.module.")]
        check("naming_renamed_match_by_key", renamed and all(rows[n][0] == "key" for n in renamed),
              [(n, rows[n]) for n in renamed][:4])
    if case.startswith("nested optimizer state"):
        check("naming_nested_list_index", "optimizer_states.0.state.0.exp_avg" in tensors and
              rows["optimizer_states.0.state.0.exp_avg"][0] == "name", sorted(tensors)[-4:])
    if case.startswith("tied weights"):
        # head.weight shares tok.weight's storage: one storage, named by its first reference.
        check("naming_tied_named_once", "model.tok.weight" in tensors and
              "model.head.weight" not in tensors, sorted(t for t in tensors if t.startswith("model."))[:6])
    if case.startswith("embedding resized"):
        tok = tensors["model.tok.weight"]
        check("naming_resized_row_bytes", tok[3] == 96 * 4, tok)
        check("naming_resized_new_rows_alone", rows["model.tok.weight"][0] == "name+none" and
              rows["optimizer.state.0.exp_avg"][0] == "name+none", rows["model.tok.weight"])

# The same in the store: the writer's stream segmenter names the storages, the footers keep
# the names, and the re-encoding of the older version against the newer matches by them.
def torch_store_ratio(tag, older, newer):
    store, imp = os.path.join(work, tag + "-store"), os.path.join(work, tag + "-import")
    for step, f in (("1", older), ("2", newer)):
        os.makedirs(os.path.join(imp, "step" + step))
        open(os.path.join(imp, "step" + step, "ckpt.pt"), "wb").write(open(f, "rb").read())
    tpde("import", imp, store)
    ls = {line.split()[-1]: line.split() for line in tpde("ls", "-R", store).stdout.splitlines()[1:]}
    old = ls.get("step1/ckpt.pt")
    cat = subprocess.run([TPDE, "cat", store, "step1/ckpt.pt"], capture_output=True).stdout
    check(f"{tag}_cat_exact", cat == open(older, "rb").read())
    check(f"{tag}_is_delta", old is not None and old[4] == "step2/ckpt.pt", old)
    return float(old[2]) if old else 0.0


front = os.path.join(work, "naming", "inserted_at_the_front")
store_unchanged = torch_store_ratio("torch_store_base", os.path.join(front, "prev", "ckpt.pt"),
                                    os.path.join(front, "ref_new", "ckpt.pt"))
store_inserted = torch_store_ratio("torch_store_inserted", os.path.join(front, "prev", "ckpt.pt"),
                                   os.path.join(front, "new", "ckpt.pt"))
naming_ratios.append(("store, inserted at the front (older version against newer)", store_unchanged,
                      store_inserted))
check("torch_store_inserted_within_1pct", store_inserted >= store_unchanged * 0.99,
      f"{store_inserted} vs {store_unchanged}")

# DCP: items named by the .metadata beside the .distcp file (dcp_writer.py writes what
# torch.distributed.checkpoint writes); an entry added at the front shifts every item.
dcp_dir = os.path.join(work, "dcp")
dprev = dcp_writer.save(prev_state, os.path.join(dcp_dir, "step1"))
dbase = dcp_writer.save(new_state, os.path.join(dcp_dir, "step2"))
dnew = dcp_writer.save(naming_cases.insert_at(0.0)(new_state), os.path.join(dcp_dir, "step3"))
kind, segs = segments_full(dnew)
dnames = {s[5] for s in segs}
check("dcp_metadata_names", kind == "distcp" and "model.tok.weight/data/0" in dnames and
      "optimizer.state.2.exp_avg/data/0" in dnames, sorted(dnames)[:5])
check("dcp_metadata_stream_names", segments_full(dnew, "--stream", "4096")[1] == segs)
dcp_base = pair_ratio("dcp_named_base", dbase, dprev)
dcp_got = pair_ratio("dcp_named", dnew, dprev)
naming_ratios.append(("DCP, inserted at the front (.metadata beside)", dcp_base, dcp_got))
check("dcp_named_within_1pct", dcp_got >= dcp_base * 0.99, f"{dcp_got:.4f} vs {dcp_base:.4f}")
bare = os.path.join(dcp_dir, "bare")
os.makedirs(bare)
for tag, f in (("p", dprev), ("n", dnew)):
    os.makedirs(os.path.join(bare, tag))
    open(os.path.join(bare, tag, "__0_0.distcp"), "wb").write(open(f, "rb").read())
dcp_bare = pair_ratio("dcp_bare", os.path.join(bare, "n", "__0_0.distcp"), os.path.join(bare, "p", "__0_0.distcp"))
naming_ratios.append(("DCP, inserted at the front (no .metadata)", dcp_base, dcp_bare))
check("dcp_without_metadata_by_order", dcp_bare < dcp_got * 0.99, f"{dcp_bare:.4f} vs {dcp_got:.4f}")
# The store's re-encoding finds the .metadata files in the store (import commits a step's
# .metadata before its .distcp files: natural name order). In the store the older version is
# the delta (against the newer): compared with the same import of the unchanged pair.
def imported_ratio(tag, newer, with_metadata=True):
    store, imp = os.path.join(work, tag + "-store"), os.path.join(work, tag + "-import")
    for step, f in (("1", dprev), ("2", newer)):
        os.makedirs(os.path.join(imp, "step" + step))
        for name in ("__0_0.distcp", ".metadata") if with_metadata else ("__0_0.distcp",):
            open(os.path.join(imp, "step" + step, name), "wb").write(
                open(os.path.join(os.path.dirname(f), name), "rb").read())
    tpde("import", imp, store)
    ls = {line.split()[-1]: line.split() for line in tpde("ls", "-R", store).stdout.splitlines()[1:]}
    old = ls.get("step1/__0_0.distcp")
    cat = subprocess.run([TPDE, "cat", store, "step1/__0_0.distcp"], capture_output=True).stdout
    check(f"{tag}_cat_exact", cat == open(dprev, "rb").read())
    check(f"{tag}_is_delta", old is not None and old[4] == "step2/__0_0.distcp", old)
    return float(old[2]) if old else 0.0


store_base = imported_ratio("dcp_store_base", dbase)
store_named = imported_ratio("dcp_store_named", dnew)
store_bare = imported_ratio("dcp_store_bare", dnew, with_metadata=False)
naming_ratios.append(("DCP in the store, inserted at the front (.metadata in the store)", store_base, store_named))
naming_ratios.append(("DCP in the store, inserted at the front (no .metadata)", store_base, store_bare))
check("dcp_store_named_within_1pct", store_named >= store_base * 0.99, f"{store_named} vs {store_base}")
check("dcp_store_bare_by_order", store_bare < store_named * 0.99, f"{store_bare} vs {store_named}")
print("| case | unchanged pair | modified pair | vs unchanged |")
print("|---|---:|---:|---:|")
for case, base, got in naming_ratios:
    print(f"| {case} | {base:.3f} | {got:.3f} | {100 * (got / base - 1):+.2f}% |")

# 8. Hostile files fall back to fixed blocks and still round-trip.
good = open(paths["state_b"], "rb").read()
cases = {
    "truncated_zip": good[: len(good) // 2],
    "garbage_pk": b"PK\x03\x04" + os.urandom(5000),
    "lying_safetensors": struct.pack("<Q", 1 << 40) + b"{" + os.urandom(100),
    "overlap_safetensors": None,
    "bad_npy": b"\x93NUMPY\x09\x00" + os.urandom(300),
}
h = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "y": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}).encode()
cases["overlap_safetensors"] = struct.pack("<Q", len(h)) + h + bytes(24)
for name, data in cases.items():
    path = os.path.join(work, name)
    open(path, "wb").write(data)
    kind, _ = segments(path)
    check(f"hostile_{name}_falls_back", kind == "generic", kind)
    r = tpde("segments", "--stream", "7", path)
    check(f"hostile_{name}_stream_covers", r.returncode == 0)
    roundtrip(f"hostile_{name}", path)

if not failed:
    shutil.rmtree(work, ignore_errors=True)  # kept for a look when something failed
finish()

#!/usr/bin/python3
"""Writes real checkpoint files as fuzz seeds: torch.save archives, their pickles, a
safetensors file, npy/npz and a DCP-like concatenation. Without torch/numpy it writes what
it can from the standard library."""
import collections
import io
import json
import os
import struct
import sys
import zipfile

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
h = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]}}).encode()
h += b" " * (-len(h) % 8)
open(os.path.join(out, "a.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + bytes(range(20)))
try:
    import numpy as np
    import torch
except ImportError:
    sys.exit(0)
sd = {"w": torch.randn(8, 4), "b": torch.randn(4).to(torch.bfloat16), "n": torch.arange(3), "h": torch.ones(2).half()}
# What names storages: nested dicts and lists, int keys, a tied weight, a view, a Parameter.
sd["tied"] = sd["w"]
sd["view"] = sd["w"][2:]
sd["param"] = torch.nn.Parameter(torch.randn(3, 2))
opt = {"state": {0: {"exp_avg": torch.zeros(8, 4), "step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
buf = io.BytesIO()
torch.save({"model": collections.OrderedDict(sd), "optimizers": [opt], "step": 3, "name": "x"}, buf)
open(os.path.join(out, "a.pt"), "wb").write(buf.getvalue())
with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
    for n in z.namelist():
        if n.endswith("data.pkl"):
            open(os.path.join(out, "a.pkl"), "wb").write(z.read(n))
np.save(os.path.join(out, "a.npy"), np.arange(10, dtype=np.float32))
np.savez(os.path.join(out, "a.npz"), x=np.arange(5, dtype=np.float16), y=np.ones(3))
with open(os.path.join(out, "a.distcp"), "wb") as f:
    for v in sd.values():
        b = io.BytesIO()
        torch.save(v, b)
        f.write(b.getvalue())
# A DCP .metadata, as tests/format/dcp_writer.py (torch.distributed.checkpoint's layout) writes it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "format"))
import tempfile  # noqa: E402

import dcp_writer  # noqa: E402

with tempfile.TemporaryDirectory() as d:
    dcp_writer.save({"model": sd, "optimizer": opt}, d)
    open(os.path.join(out, "a.metadata"), "wb").write(open(os.path.join(d, ".metadata"), "rb").read())

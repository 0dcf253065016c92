#!/usr/bin/python3
"""Trains a small byte-level language model with Debian's PyTorch and saves a checkpoint every
--every steps into DIR with plain torch.save (model, AdamW state, step, RNG), keeping the last
--keep (older ones are deleted, as save_total_limit does). Prints one line per checkpoint:
step, logical size, stored size, ratio, save time; stored sizes and ratios come from the
mount's user.tpde.* attributes when DIR is a tpdefs mount. Ends with a summary and a check
that the newest checkpoint loads back bit-exact."""
import argparse
import glob
import json
import os
import time

import torch

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("dir")
ap.add_argument("--steps", type=int, default=120)
ap.add_argument("--every", type=int, default=20)
ap.add_argument("--keep", type=int, default=3)
ap.add_argument("--width", type=int, default=384)
ap.add_argument("--no-wait", action="store_true",
                help="do not wait for the previous checkpoint's re-encoding to print its ratio")
ap.add_argument("--report", help="write steps/s and save times as JSON here (benchmarks)")
a = ap.parse_args()

torch.manual_seed(0)
torch.set_num_threads(max(1, (os.cpu_count() or 2)))
corpus = b"".join(open(p, "rb").read() for p in sorted(glob.glob("/usr/lib/python3/dist-packages/*.py"))[:200])
data = torch.tensor(list(corpus[: 2_000_000] or b"tpdefs " * 1000), dtype=torch.long)
ctx = 32
model = torch.nn.Sequential(
    torch.nn.Embedding(256, 64), torch.nn.Flatten(),
    torch.nn.Linear(64 * ctx, a.width), torch.nn.GELU(),
    torch.nn.Linear(a.width, a.width), torch.nn.GELU(),
    torch.nn.Linear(a.width, 256))
opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
params = sum(p.numel() for p in model.parameters())
print(f"demo: model with {params / 1e6:.2f}M parameters; a checkpoint every {a.every} steps into {a.dir}, "
      f"keeping the last {a.keep}")


def attr(path, name):
    try:
        return os.getxattr(path, "user.tpde." + name).decode()
    except OSError:
        return ""


def stored(path):
    s = attr(path, "stored_size")
    return int(s) if s else os.stat(path).st_blocks * 512


print(f"{'step':>6} {'loss':>7} {'file':<18} {'bytes':>11} {'save s':>7} | {'previous file':<18} {'stored':>11} {'ratio':>6}")
saved, times = [], []
run_start = time.perf_counter()
for step in range(1, a.steps + 1):
    idx = torch.randint(0, len(data) - ctx - 1, (32,))
    x = torch.stack([data[i:i + ctx] for i in idx])
    y = data[idx + ctx]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % a.every:
        continue
    name = f"checkpoint-{step}.pt"
    path = os.path.join(a.dir, name)
    t = time.perf_counter()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "rng": torch.get_rng_state()}, path)
    secs = time.perf_counter() - t
    times.append(secs)
    saved.append(path)
    # The previous checkpoint is re-encoded against this one in the background: wait for it.
    prev = saved[-2] if len(saved) > 1 else None
    if prev and not a.no_wait:
        for _ in range(100):
            if attr(prev, "parent"):
                break
            time.sleep(0.1)
    prev_text = ""
    if prev:
        p_size, p_stored = os.path.getsize(prev), stored(prev)
        prev_text = f"{os.path.basename(prev):<18} {p_stored:>11} {p_size / max(p_stored, 1):>6.3f}"
    print(f"{step:>6} {loss.item():>7.3f} {name:<18} {os.path.getsize(path):>11} {secs:>7.2f} | {prev_text}",
          flush=True)
    while len(saved) > a.keep:
        os.remove(saved.pop(0))

run_secs = time.perf_counter() - run_start
if a.report:
    with open(a.report, "w") as f:
        json.dump({"steps": a.steps, "seconds": run_secs, "steps_per_s": a.steps / run_secs,
                   "save_seconds": times}, f)
time.sleep(1)
logical = sum(os.path.getsize(p) for p in saved)
store_bytes = sum(stored(p) for p in saved)
print(f"demo: kept {len(saved)} checkpoints, {logical} bytes, stored in {store_bytes} bytes "
      f"(ratio {logical / max(store_bytes, 1):.3f}); mean save time {sum(times) / len(times):.2f} s")
stats = attr(a.dir, "stats")
if stats:
    s = json.loads(stats)
    print(f"demo: mount counters: {s['commits']} commits, {s['reencodes']} re-encodings, "
          f"{s['versions_freed']} versions freed ({s['bytes_freed']} bytes)")
back = torch.load(saved[-1], weights_only=False)
same = all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())
if not same:
    raise SystemExit("demo: the newest checkpoint did not load back bit-exact")
print("demo: the newest checkpoint loads back bit-exact")

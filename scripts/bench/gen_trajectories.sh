#!/bin/bash
# Generates (once; cached) the two real trajectories the codec benchmark uses:
#   DIR/traj  8.4M-param GPT, AdamW lr 3e-4, 600 steps, checkpoint every 50 (~3-11 min)
#   DIR/ft    fine-tuning-like continuation of traj/full/step_000600.pt, lr 1e-5, every 20
# Each has model/, full/ and bf16/ variants (see ../shared/data/gen_checkpoints.py).
#   DIR/conv/f16  fp16 copies of traj/model's checkpoints (gen_checkpoints.py writes no fp16;
#                 torch.save of .half() tensors, as a model saved in float16 is)
set -euo pipefail
dir=${1:?usage: gen_trajectories.sh DIR}
gen=${GEN_CHECKPOINTS:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/gen_checkpoints.py}
common=(--arch gpt --params-target 8.4e6 --n-layer 5 --n-head 8 --batch-size 4 --seq-len 128
        --optimizer adamw)
if [ ! -f "$dir/traj/full/step_000600.pt" ]; then
    /usr/bin/python3 "$gen" "${common[@]}" --lr 3e-4 --steps 600 --every 50 --seed 0 --out "$dir/traj"
fi
if [ ! -f "$dir/ft/full/step_000760.pt" ]; then
    /usr/bin/python3 "$gen" "${common[@]}" --init-from "$dir/traj/full/step_000600.pt" --lr 1e-5 \
        --steps 160 --every 20 --seed 1 --out "$dir/ft"
fi
if [ ! -f "$dir/conv/f16/step_000600.pt" ]; then
    mkdir -p "$dir/conv/f16"
    /usr/bin/python3 - "$dir/traj/model" "$dir/conv/f16" <<'EOF'
import os, sys, torch
src, dst = sys.argv[1:]
for name in sorted(os.listdir(src)):
    state = torch.load(os.path.join(src, name), map_location="cpu")
    half = {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in state.items()}
    torch.save(half, os.path.join(dst, name))
EOF
fi
echo "trajectories ready in $dir"

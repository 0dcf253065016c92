#!/bin/bash
# Generates (once; cached) the two real trajectories the codec benchmark uses:
#   DIR/traj  8.4M-param GPT, AdamW lr 3e-4, 600 steps, checkpoint every 50 (~3-11 min)
#   DIR/ft    fine-tuning-like continuation of traj/full/step_000600.pt, lr 1e-5, every 20
# Each has model/, full/ and bf16/ variants (see ../shared/data/gen_checkpoints.py).
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
echo "trajectories ready in $dir"

#!/bin/bash
# The main job until the filesystem lands: train a tiny model with Debian's PyTorch, then
# encode each checkpoint against its predecessor with `tpde`, check every decode bit-exact,
# and print the ratios. Runs in well under a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
TPDE=${TPDE:-build/tpde}
work=${DEMO_DIR:-$(mktemp -d /tmp/tpde-demo.XXXXXX)}
gen=${GEN_CHECKPOINTS:-../shared/data/gen_checkpoints.py}
echo "demo: training a small model into $work (checkpoint every 10 steps)"
/usr/bin/python3 "$gen" --params-target 2e5 --n-layer 2 --n-head 4 --seq-len 64 --steps 40 --every 10 \
    --out "$work/run" > "$work/train.log"
printf '%-8s %-16s %12s %12s %8s\n' variant file bytes stored ratio
for variant in model full bf16; do
    prev=""
    for f in "$work/run/$variant"/step_*.pt; do
        args=()
        [ -n "$prev" ] && args=(--ref "$prev")
        "$TPDE" encode "${args[@]}" "$f" -o "$work/x.tpde"
        "$TPDE" decode "${args[@]}" "$work/x.tpde" -o "$work/x.out"
        cmp -s "$f" "$work/x.out" || { echo "demo: $f did not decode bit-exact" >&2; exit 1; }
        a=$(stat -c %s "$f") b=$(stat -c %s "$work/x.tpde")
        printf '%-8s %-16s %12d %12d %8.3f\n' "$variant" "$(basename "$f")" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{print a/b}')"
        prev=$f
    done
done
echo "demo: every checkpoint decoded bit-exact"

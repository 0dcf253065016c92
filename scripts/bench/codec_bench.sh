#!/bin/bash
# codec_bench.sh — compare tpde against general-purpose (delta) compressors on checkpoint trajectories.
#
# Usage:
#   scripts/bench/codec_bench.sh [--pairs N] [--skip-slow] DIR [DIR...]
#
#   DIR          a directory of step_*.pt checkpoints; name order (C locale) = chronological order.
#                Every consecutive pair (PREV, NEW) is one sample. The variant label printed for a
#                DIR is its path relative to its grandparent (e.g. /work/data/traj/bf16 -> traj/bf16).
#   --pairs N    only use the last N pairs of each DIR (default: all pairs).
#   --skip-slow  skip zstd -19 --patch-from and xdelta3 -9 (they take seconds per pair).
#   --reps N     time every encode and decode command N times per pair, keep the median
#                (default 3; the machine's noise otherwise decides single runs).
#
#   Env: TPDE=path/to/tpde   (default: ../../build/tpde relative to this script)
#        BENCH_TMPDIR=dir    where the scratch directory is created (default: $TMPDIR or /tmp);
#                            keep it on the same disk as the data so I/O is comparable.
#
# What is measured, per pair, for every method (all on the same files in the same run):
#   tpde-j1 / tpde-j2   tpde encode --ref PREV NEW -j {1,2}    / tpde decode --ref PREV -j {1,2}
#   zstd-3              zstd -3 NEW (standalone, no reference)  / zstd -d
#   zstd-19-patch       zstd -19 --long=27 --patch-from=PREV NEW / zstd -d --long=27 --patch-from=PREV
#   xdelta3-9           xdelta3 -9 -s PREV NEW                 / xdelta3 -d -s PREV
#   (zstd is run with its CLI default threading; the other options are exactly as listed.)
#
#   ratio    = bytes(NEW) / bytes(encoded output); the table shows the mean over pairs of the per-pair ratio.
#   MB/s     = bytes(NEW) / 1e6 / wall-clock seconds of one encode (or decode) command, including
#              process start-up and writing the output file (median of --reps runs); the table
#              shows the median over pairs.
#   Encoded and decoded outputs are written to files in a scratch directory; every decode is checked
#   bit-exact against NEW with cmp, and any mismatch aborts the script with a non-zero exit status.
#   Inputs are read once before each pair (cat > /dev/null) so all methods see a warm page cache;
#   caches are not dropped.
#   The scaling table reports tpde's median MB/s at -j 2 divided by its median MB/s at -j 1; the
#   last table tpde -j 1's median MB/s divided by zstd -3's (encode) and zstd -d's (decode).
set -euo pipefail
export LC_ALL=C

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TPDE=${TPDE:-$script_dir/../../build/tpde}

die() { echo "codec_bench: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---- arguments --------------------------------------------------------------------------------
pairs=0            # 0 = all
skip_slow=0
reps=3
dirs=()
while [ $# -gt 0 ]; do
    case $1 in
        --pairs) [ $# -ge 2 ] || die "--pairs needs a number"; pairs=$2; shift 2 ;;
        --pairs=*) pairs=${1#--pairs=}; shift ;;
        --skip-slow) skip_slow=1; shift ;;
        --reps) [ $# -ge 2 ] || die "--reps needs a number"; reps=$2; shift 2 ;;
        --reps=*) reps=${1#--reps=}; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; dirs+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) dirs+=("$1"); shift ;;
    esac
done
[[ $pairs =~ ^[0-9]+$ ]] || die "--pairs must be a non-negative integer, got '$pairs'"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, got '$reps'"
[ ${#dirs[@]} -gt 0 ] || { usage >&2; exit 2; }

[ -x "$TPDE" ] || die "tpde binary not found or not executable: $TPDE (set TPDE=...)"
command -v zstd >/dev/null || die "zstd not found in PATH"
[ $skip_slow = 1 ] || command -v xdelta3 >/dev/null || die "xdelta3 not found in PATH (or use --skip-slow)"

methods=(tpde-j1 tpde-j2 zstd-3)
[ $skip_slow = 1 ] || methods+=(zstd-19-patch xdelta3-9)

# ---- scratch space ----------------------------------------------------------------------------
tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/codec_bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
results=$tmp/results.tsv   # variant  method  raw_bytes  stored_bytes  enc_seconds  dec_seconds
: > "$results"

# run_timed CMD...: run CMD (stdout discarded) $reps times, set ELAPSED to the median of its
# wall-clock seconds.
ELAPSED=0
run_timed() {
    local t0 t1 times=()
    for ((r = 0; r < reps; r++)); do
        t0=$(date +%s.%N)
        "$@" > /dev/null || die "command failed (exit $?): $*"
        t1=$(date +%s.%N)
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')")
    done
    ELAPSED=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ t[NR] = $1 } END { print t[int((NR + 1) / 2)] }')
}

# set_cmds METHOD PREV NEW ENC DEC: fill the arrays ENC_CMD / DEC_CMD with METHOD's encode
# (NEW -> ENC, against PREV where the method uses a reference) and decode (ENC -> DEC) commands.
set_cmds() {
    local method=$1 prev=$2 new=$3 enc=$4 dec=$5
    case $method in
        tpde-j1|tpde-j2)
            local j=${method#tpde-j}
            ENC_CMD=("$TPDE" encode --ref "$prev" "$new" -o "$enc" -j "$j")
            DEC_CMD=("$TPDE" decode --ref "$prev" "$enc" -o "$dec" -j "$j") ;;
        zstd-3)
            ENC_CMD=(zstd -q -f -3 "$new" -o "$enc")
            DEC_CMD=(zstd -q -f -d "$enc" -o "$dec") ;;
        zstd-19-patch)
            ENC_CMD=(zstd -q -f -19 --long=27 --patch-from="$prev" "$new" -o "$enc")
            DEC_CMD=(zstd -q -f -d --long=27 --patch-from="$prev" "$enc" -o "$dec") ;;
        xdelta3-9)
            ENC_CMD=(xdelta3 -f -e -9 -s "$prev" "$new" "$enc")
            DEC_CMD=(xdelta3 -f -d -s "$prev" "$enc" "$dec") ;;
        *) die "internal: unknown method $method" ;;
    esac
}

# ---- header -----------------------------------------------------------------------------------
rev=$(git -C "$script_dir" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$script_dir" diff --quiet HEAD 2>/dev/null || rev="$rev (dirty)"
echo "# codec_bench  $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo
echo "- host: $(hostname), nproc=$(nproc), cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?')"
echo "- tpde: $TPDE (repo rev $rev)"
echo "- zstd: $(zstd -V 2>&1 | head -n1)"
if [ $skip_slow = 1 ]; then
    echo "- xdelta3: skipped (--skip-slow)"
else
    echo "- xdelta3: $(xdelta3 -V 2>&1 | head -n1)"
fi
echo "- pairs per dir: $([ "$pairs" = 0 ] && echo all || echo "last $pairs"); runs per command: $reps (median); scratch: $tmp"
echo

# ---- measurement ------------------------------------------------------------------------------
for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || die "not a directory: $dir"
    abs=$(cd "$dir" && pwd)
    variant=$(basename "$(dirname "$abs")")/$(basename "$abs")
    files=("$abs"/step_*.pt)
    [ -e "${files[0]}" ] || die "no step_*.pt files in $dir"
    n=${#files[@]}
    [ "$n" -ge 2 ] || die "need at least 2 step_*.pt files in $dir, found $n"
    first=1                                   # index of NEW in the first pair used
    if [ "$pairs" -gt 0 ] && [ "$pairs" -lt $((n - 1)) ]; then first=$((n - pairs)); fi
    echo "measuring $variant: $((n - first)) pair(s)" >&2
    for ((i = first; i < n; i++)); do
        prev=${files[i-1]} new=${files[i]}
        raw=$(stat -c %s "$new")
        cat "$prev" "$new" > /dev/null       # warm the page cache for every method alike
        for m in "${methods[@]}"; do
            enc=$tmp/enc.$m dec=$tmp/dec.$m
            set_cmds "$m" "$prev" "$new" "$enc" "$dec"
            run_timed "${ENC_CMD[@]}"; enc_s=$ELAPSED
            run_timed "${DEC_CMD[@]}"; dec_s=$ELAPSED
            if ! cmp -s "$new" "$dec"; then
                die "$m: decode of $(basename "$new") (ref $(basename "$prev")) in $variant is NOT bit-exact"
            fi
            stored=$(stat -c %s "$enc")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$m" "$raw" "$stored" "$enc_s" "$dec_s" >> "$results"
            echo "  $(basename "$new") $m: ratio $(awk -v a="$raw" -v b="$stored" 'BEGIN { printf "%.3f", a / b }')," \
                 "enc ${enc_s}s, dec ${dec_s}s" >&2
            rm -f "$enc" "$dec"
        done
    done
done

# ---- report -----------------------------------------------------------------------------------
python3 - "$results" <<'EOF'
import sys, statistics
from collections import OrderedDict

rows = OrderedDict()   # (variant, method) -> list of (ratio, enc MB/s, dec MB/s)
with open(sys.argv[1]) as f:
    for line in f:
        variant, method, raw, stored, enc_s, dec_s = line.split("\t")
        raw, stored, enc_s, dec_s = int(raw), int(stored), float(enc_s), float(dec_s)
        rows.setdefault((variant, method), []).append(
            (raw / stored, raw / 1e6 / enc_s, raw / 1e6 / dec_s))

summary = {}
print("| variant | method | mean ratio | enc MB/s (median) | dec MB/s (median) |")
print("|---|---|---:|---:|---:|")
for (variant, method), samples in rows.items():
    ratio = statistics.mean(s[0] for s in samples)
    enc = statistics.median(s[1] for s in samples)
    dec = statistics.median(s[2] for s in samples)
    summary[(variant, method)] = (enc, dec)
    print(f"| {variant} | {method} | {ratio:.3f} | {enc:.1f} | {dec:.1f} |")

def speed_table(title, columns, faster, slower):
    """Per variant, median MB/s of method `faster` over that of `slower`, encode and decode."""
    print()
    print(title)
    print()
    print(f"| variant | {columns[0]} | {columns[1]} |")
    print("|---|---:|---:|")
    for variant in OrderedDict.fromkeys(v for v, _ in rows):
        (ef, df), (es, ds) = summary[(variant, faster)], summary[(variant, slower)]
        print(f"| {variant} | {ef / es:.2f}x | {df / ds:.2f}x |")


speed_table("tpde 2-thread scaling (median MB/s at -j 2 / median MB/s at -j 1):",
            ("enc j2/j1", "dec j2/j1"), "tpde-j2", "tpde-j1")
speed_table("tpde -j 1 against zstd (median MB/s of tpde-j1 / median MB/s of zstd-3, encode "
            "and decode):", ("enc tpde-j1 / zstd -3", "dec tpde-j1 / zstd -d"), "tpde-j1",
            "zstd-3")
EOF

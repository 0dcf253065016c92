#!/bin/bash
# End-to-end checks of the `tpde` command line: round trips compared by bytes, errors that
# are one clear line with a non-zero exit. Writes a JUnit-style summary for the test report.
set -u
TPDE=${1:?usage: tpde_cli_test.sh PATH_TO_TPDE}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0 failed_names=()
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); failed_names+=("$1"); echo "FAIL $1${2:+: $2}"; }

# Data: a "previous" file and a "new" file that differs a little, with an odd size.
/usr/bin/python3 - "$work" <<'PY'
import os, random, struct, sys
d = sys.argv[1]
random.seed(7)
n = 300001
prev = [random.gauss(0, 0.02) for _ in range(n)]
new = [x + random.gauss(0, 1e-4) if random.random() < 0.9 else x for x in prev]
open(os.path.join(d, "prev.bin"), "wb").write(struct.pack(f"<{n}f", *prev) + b"abc")
open(os.path.join(d, "new.bin"), "wb").write(struct.pack(f"<{n}f", *new) + b"abcde")
open(os.path.join(d, "empty.bin"), "wb").close()
PY

roundtrip() { # name, original, encode args..., -- decode args...
    local name=$1 original=$2; shift 2
    local enc=() dec=()
    while [ "$1" != "--" ]; do enc+=("$1"); shift; done; shift
    dec=("$@")
    if "$TPDE" encode "${enc[@]}" -o "$work/$name.tpde" &&
       "$TPDE" decode "${dec[@]}" "$work/$name.tpde" -o "$work/$name.out" &&
       cmp -s "$work/$name.out" "$original"; then ok "$name"; else bad "$name"; fi
}
N=$work/new.bin
roundtrip delta $N --ref "$work/prev.bin" "$work/new.bin" -- --ref "$work/prev.bin"
roundtrip standalone $N "$work/new.bin" --
roundtrip empty "$work/empty.bin" "$work/empty.bin" --
roundtrip smallblocks $N --block-size 4096 --ref "$work/prev.bin" "$work/new.bin" -- --ref "$work/prev.bin"
roundtrip onethread $N -j 1 --type f32 --ref "$work/prev.bin" "$work/new.bin" -- --ref "$work/prev.bin"
# encode with the option after NEW, as users type it
roundtrip reforder $N "$work/new.bin" --ref "$work/prev.bin" -- --ref "$work/prev.bin"

# The delta must actually pay: much smaller than the standalone encoding.
d=$(stat -c %s "$work/delta.tpde"); s=$(stat -c %s "$work/standalone.tpde")
if [ "$((d * 5 / 4))" -lt "$s" ]; then ok delta_smaller; else bad delta_smaller "delta $d vs standalone $s"; fi

expect_error() { # name, pattern, command...
    local name=$1 pattern=$2; shift 2
    local out rc
    out=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" == *$pattern* ]]; then
        ok "$name"
    else
        bad "$name" "rc=$rc out=$out"
    fi
}
expect_error missing_input "new.missing" "$TPDE" encode "$work/new.missing" -o "$work/x"
expect_error wrong_ref "reference" "$TPDE" decode --ref "$work/new.bin" "$work/delta.tpde" -o "$work/x"
expect_error no_ref "--ref" "$TPDE" decode "$work/delta.tpde" -o "$work/x"
expect_error not_tpde "not a tpde file" "$TPDE" decode "$work/new.bin" -o "$work/x"
head -c 5000 "$work/delta.tpde" > "$work/trunc.tpde"
expect_error truncated "trunc.tpde" "$TPDE" decode --ref "$work/prev.bin" "$work/trunc.tpde" -o "$work/x"
cp "$work/delta.tpde" "$work/flip.tpde"
printf '\x55' | dd of="$work/flip.tpde" bs=1 seek=20000 conv=notrunc 2>/dev/null
expect_error corrupt "corrupt" "$TPDE" decode --ref "$work/prev.bin" "$work/flip.tpde" -o "$work/x"
expect_error bad_type "element type" "$TPDE" encode --type f8 "$work/new.bin" -o "$work/x"
if [ ! -e "$work/x" ] && ! ls "$work"/x.tmp-* >/dev/null 2>&1; then ok no_partial_output; else bad no_partial_output; fi

# An existing output is replaced by a run that succeeds, and left as it was by one that fails.
printf 'old' > "$work/exists.out"
"$TPDE" decode --ref "$work/prev.bin" "$work/flip.tpde" -o "$work/exists.out" 2>/dev/null
kept=$(cat "$work/exists.out")
"$TPDE" decode --ref "$work/prev.bin" "$work/delta.tpde" -o "$work/exists.out"
if [ "$kept" = old ] && cmp -s "$work/exists.out" "$N" && ! ls "$work"/exists.out.tmp-* >/dev/null 2>&1; then
    ok replace_output
else
    bad replace_output "kept='$kept'"
fi

# A device or FIFO given as output is written to, never replaced by a regular file.
mkfifo "$work/fifo"
timeout 30 cat "$work/fifo" >"$work/fifo.out" &
reader=$!
"$TPDE" decode --ref "$work/prev.bin" "$work/delta.tpde" -o "$work/fifo"
wait $reader
if [ -p "$work/fifo" ] && cmp -s "$work/fifo.out" "$N"; then ok fifo_output; else bad fifo_output; fi
if mknod "$work/null" c 1 3 2>/dev/null; then
    "$TPDE" decode --ref "$work/prev.bin" "$work/delta.tpde" -o "$work/null"
    if [ -c "$work/null" ]; then ok device_output; else bad device_output; fi
else
    echo "SKIP device_output: mknod needs root"
fi
expect_error dir_output "Is a directory" "$TPDE" decode --ref "$work/prev.bin" "$work/delta.tpde" -o "$work"

out=$("$TPDE" stats "$work/prev.bin" "$work/new.bin")
if grep -q '^ *total' <<<"$out" && grep -q 'dense\|sparse' <<<"$out"; then ok stats; else bad stats "$out"; fi
for sub in encode decode stats; do
    if "$TPDE" $sub --help | grep -q -- '--help'; then ok "help_$sub"; else bad "help_$sub"; fi
done

if [ -n "${RESULTS_DIR:-}" ]; then
    mkdir -p "$RESULTS_DIR"
    echo "$pass $fail" > "$RESULTS_DIR/tpde_cli.count"
fi
echo "tpde_cli: $pass passed, $fail failed ${failed_names[*]:-}"
[ "$fail" -eq 0 ]

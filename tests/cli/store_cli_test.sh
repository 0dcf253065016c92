#!/bin/bash
# End-to-end checks of the chain store through `tpde` (init, import, ls, cat, export, fsck,
# gc): a tree of checkpoints goes in and comes out byte for byte with its modes, symlinks and
# xattrs; damage and leftovers are found by fsck; errors are one clear line with a non-zero
# exit. Writes a count of passed and failed checks for the test report.
set -u
TPDE=${1:?usage: store_cli_test.sh PATH_TO_TPDE}
work=$(mktemp -d)
holder=
trap '[ -n "$holder" ] && kill "$holder" 2>/dev/null; rm -rf "$work"' EXIT
pass=0 fail=0 skip=0 failed_names=()
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); failed_names+=("$1"); echo "FAIL $1${2:+: $2}"; }
skipped() { skip=$((skip + 1)); echo "SKIP $1${2:+: $2}"; }

# Input: three checkpoints of one run. model.bin changes a little from one to the next (so
# deltas pay), config.json repeats, odd.bin has an odd size, plus an empty file, a symlink, a
# nested directory with a mode-600 file, and a user.* xattr on model.bin.
in=$work/in
/usr/bin/python3 - "$in" <<'PY'
import os, random, struct, sys
root = sys.argv[1]
random.seed(11)
n = 100003
w = [random.gauss(0, 0.02) for _ in range(n)]
xattrs = True
for step in (1, 2, 3):
    d = os.path.join(root, f"checkpoint-{step}")
    os.makedirs(os.path.join(d, "sub", "deep"))
    w = [x + random.gauss(0, 1e-4) if random.random() < 0.5 else x for x in w]
    open(os.path.join(d, "model.bin"), "wb").write(struct.pack(f"<{n}f", *w))
    open(os.path.join(d, "config.json"), "w").write('{"layers": 12, "hidden": 768}\n' * 40)
    open(os.path.join(d, "odd.bin"), "wb").write(random.randbytes(12345 + step))
    open(os.path.join(d, "empty.bin"), "wb").close()
    notes = os.path.join(d, "sub", "deep", "notes.txt")
    open(notes, "w").write(f"step {step}\n")
    os.chmod(notes, 0o600)
    os.symlink("model.bin", os.path.join(d, "latest"))
    try:
        os.setxattr(os.path.join(d, "model.bin"), "user.step", str(step).encode())
    except OSError:
        xattrs = False
if not xattrs:
    open(os.path.join(os.path.dirname(root), "no-xattrs"), "w").close()
PY
files=$(cd "$in" && find . -type f | sed 's|^\./||' | sort)
links=$(cd "$in" && find . -type l | sed 's|^\./||' | sort)

expect_error() { # name, pattern, command...: fails with one line on stderr matching pattern
    local name=$1 pattern=$2; shift 2
    local out rc
    out=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" == *$pattern* ]]; then
        ok "$name"
    else
        bad "$name" "rc=$rc out=$out"
    fi
}
flip_middle_byte() {
    /usr/bin/python3 - "$1" <<'PY'
import os, sys
p = sys.argv[1]
at = os.path.getsize(p) // 2
with open(p, "r+b") as f:
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0x5a]))
PY
}

# init
store=$work/store
if "$TPDE" init "$store" && [ -f "$store/tpdefs-store" ]; then ok init; else bad init; fi
expect_error init_not_empty "not empty" "$TPDE" init "$in"

# import
if "$TPDE" import "$in" "$store" 2>"$work/import.err"; then
    ok import
else
    bad import "$(cat "$work/import.err")"
fi

# ls -R: every file with its size, every symlink with its target
"$TPDE" ls -R "$store" >"$work/ls.out" 2>&1
missing=
for f in $files; do
    size=$(stat -c %s "$in/$f")
    awk -v p="$f" -v s="$size" '$NF == p && $1 == s { found = 1 } END { exit !found }' \
        "$work/ls.out" || missing+=" $f"
done
for l in $links; do
    grep -qF " $l -> $(readlink "$in/$l")" "$work/ls.out" || missing+=" $l"
done
if [ -z "$missing" ]; then ok ls_recursive; else bad ls_recursive "not listed:$missing"; fi
# Reverse deltas: the newest model.bin is standalone, the older ones deltas against the next.
if awk '$NF == "checkpoint-3/model.bin" { a = ($5 == "(standalone)") }
        $NF == "checkpoint-1/model.bin" { b = ($5 == "checkpoint-2/model.bin") }
        END { exit !(a && b) }' "$work/ls.out"; then
    ok reverse_deltas
else
    bad reverse_deltas "$(grep model.bin "$work/ls.out")"
fi

# cat: byte-identical, every file
for f in $files; do
    if "$TPDE" cat "$store" "$f" >"$work/cat.out" && cmp -s "$work/cat.out" "$in/$f"; then
        ok "cat:$f"
    else
        bad "cat:$f"
    fi
done

# export: the same tree, modes, symlinks and xattrs
out=$work/out
if "$TPDE" export "$store" "$out" 2>/dev/null && diff -r "$in" "$out" >"$work/diff.out" 2>&1; then
    ok export_identical
else
    bad export_identical "$(head -5 "$work/diff.out")"
fi
modes_in=$(cd "$in" && find . ! -type l -printf '%p %m\n' | sort)
modes_out=$(cd "$out" 2>/dev/null && find . ! -type l -printf '%p %m\n' | sort)
if [ "$modes_in" = "$modes_out" ]; then
    ok export_modes
else
    bad export_modes "$(diff <(echo "$modes_in") <(echo "$modes_out") | head -5)"
fi
wrong=
for l in $links; do
    [ -L "$out/$l" ] && [ "$(readlink "$out/$l")" = "$(readlink "$in/$l")" ] || wrong+=" $l"
done
if [ -z "$wrong" ]; then ok export_symlinks; else bad export_symlinks "$wrong"; fi
if [ -e "$work/no-xattrs" ]; then
    skipped export_xattrs "the scratch filesystem does not take user.* xattrs"
elif /usr/bin/python3 - "$in" "$out" <<'PY'
import os, sys
for step in (1, 2, 3):
    f = f"checkpoint-{step}/model.bin"
    a = os.getxattr(os.path.join(sys.argv[1], f), "user.step")
    b = os.getxattr(os.path.join(sys.argv[2], f), "user.step")
    if a != b:
        sys.exit(f"{f}: {a!r} != {b!r}")
PY
then
    ok export_xattrs
else
    bad export_xattrs
fi
expect_error export_not_empty "not empty" "$TPDE" export "$store" "$out"

# fsck of an undamaged store
out_fsck=$("$TPDE" fsck "$store" 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "no problems" <<<"$out_fsck"; then
    ok fsck_clean
else
    bad fsck_clean "rc=$rc $out_fsck"
fi

# fsck is exact: every frame of every object checked once, the same count on every run and
# at every -j (the count once came from a decode counter that cache hits and read-ahead moved).
frames_of() { "$TPDE" fsck "$@" 2>&1 | sed -n 's/.* versions, \([0-9]*\) frames: \([0-9]*\) checked intact, 0 damaged.*/\1 \2/p'; }
counts=""
for j in 1 2 4 2 1; do counts+="$(frames_of -j "$j" "$store")|"; done
first=${counts%%|*}
total=${first% *} checked=${first#* }
if [ -n "$first" ] && [ "$total" = "$checked" ] && [ "$total" -gt 0 ] &&
   [ "$counts" = "$(printf "$first|%.0s" 1 2 3 4 5)" ]; then
    ok fsck_frame_count_exact
else
    bad fsck_frame_count_exact "frames at -j 1 2 4 2 1: $counts"
fi

# A second store, for leftovers (before the first one is damaged).
store2=$work/store2
if "$TPDE" import "$in" "$store2" 2>/dev/null; then ok import_second; else bad import_second; fi

# Damage: one byte in the middle of the biggest object. fsck and cat name the file.
big=$(find "$store"/chains/*/objects -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
vid=$(basename "$big")
damaged=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["path"])' \
    "$(dirname "$(dirname "$big")")/versions/$vid")
flip_middle_byte "$big"
"$TPDE" fsck "$store" >"$work/fsck.out" 2>"$work/fsck.err"; rc=$?
if [ $rc -ne 0 ] && grep -qF "$damaged" "$work/fsck.out"; then
    ok fsck_finds_damage
else
    bad fsck_finds_damage "rc=$rc damaged=$damaged $(cat "$work/fsck.out")"
fi
# One flipped byte is one damaged frame: reported once, with what the user can do.
n_damaged=$(grep -c "^damaged frame: " "$work/fsck.out")
if [ "$n_damaged" -eq 1 ] && grep -q "restore the file(s) named here from a copy" "$work/fsck.out" &&
   grep -q " 1 damaged" "$work/fsck.err"; then
    ok fsck_damage_reported_once
else
    bad fsck_damage_reported_once "$n_damaged 'damaged frame' lines: $(cat "$work/fsck.out" "$work/fsck.err")"
fi
"$TPDE" cat "$store" "$damaged" >/dev/null 2>"$work/cat.err"; rc=$?
last=$(tail -n 1 "$work/cat.err")
if [ $rc -ne 0 ] && [[ "$last" == "tpde: "*"$damaged"* ]]; then
    ok cat_damaged
else
    bad cat_damaged "rc=$rc $last"
fi
"$TPDE" fsck --repair "$store" >/dev/null 2>&1; rc=$?
if [ $rc -ne 0 ] && [ -f "$big" ]; then
    ok fsck_repair_keeps_data
else
    bad fsck_repair_keeps_data "rc=$rc, object $( [ -f "$big" ] && echo kept || echo removed)"
fi

# Leftovers of an unclean stop: found by fsck, removed by fsck --repair.
chain=$(find "$store2/chains" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -1)
echo leftover >"$store2/tmp/obj-123-deadbeef"
echo bogus >"$store2/chains/$chain/objects/ffff-ffff"
"$TPDE" fsck "$store2" >"$work/fsck2.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q "tmp/obj-123-deadbeef" "$work/fsck2.out" &&
   grep -q "objects/ffff-ffff" "$work/fsck2.out"; then
    ok fsck_finds_leftovers
else
    bad fsck_finds_leftovers "rc=$rc $(cat "$work/fsck2.out")"
fi
"$TPDE" fsck --repair "$store2" >/dev/null 2>&1; rc=$?
if [ $rc -eq 0 ] && [ ! -e "$store2/tmp/obj-123-deadbeef" ] &&
   [ ! -e "$store2/chains/$chain/objects/ffff-ffff" ]; then
    ok fsck_repair_removes_leftovers
else
    bad fsck_repair_removes_leftovers "rc=$rc"
fi
out_fsck=$("$TPDE" fsck "$store2" 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "no problems" <<<"$out_fsck"; then
    ok fsck_clean_after_repair
else
    bad fsck_clean_after_repair "rc=$rc $out_fsck"
fi

if "$TPDE" gc "$store2" 2>/dev/null; then ok gc; else bad gc; fi
expect_error ls_missing "missing/path" "$TPDE" ls "$store2" missing/path

# A second process is refused while one holds the store.
/usr/bin/python3 -c 'import fcntl,sys,time; f=open(sys.argv[1]+"/lock","a"); fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(30)' \
    "$store2" >"$work/holder.out" &
holder=$!
for _ in $(seq 100); do
    grep -q locked "$work/holder.out" 2>/dev/null && break
    sleep 0.1
done
expect_error store_in_use "in use" "$TPDE" gc "$store2"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=

for sub in init import ls cat export fsck gc; do
    if "$TPDE" $sub --help | grep -q -- '--help'; then ok "help_$sub"; else bad "help_$sub"; fi
done

if [ -n "${RESULTS_DIR:-}" ]; then
    mkdir -p "$RESULTS_DIR"
    if [ "$skip" -gt 0 ]; then
        echo "$pass $fail $skip" > "$RESULTS_DIR/store_cli.count"
    else
        echo "$pass $fail" > "$RESULTS_DIR/store_cli.count"
    fi
fi
summary="$pass passed, $fail failed"
[ "$skip" -gt 0 ] && summary+=", $skip skipped"
echo "store_cli: $summary ${failed_names[*]:-}"
[ "$fail" -eq 0 ]

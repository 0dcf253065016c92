#!/bin/bash
# fio with data verification (xxhash headers in every block) on a real tpdefs mount:
#   seq_write        64 MB, bs=1M, sequential write (then close)
#   seq_verify_read  the same file read back in a new job, every block verified
#   rand_write       32 MB, bs=64k, random-order writes, then fio's own verify pass
#   rand_verify_read the random-written file read in random order, every block verified
# Each job is one counted check: fio exits 0, reports no error, moved every byte, and
# printed no verify failure. One more check: the daemon exits 0 after the unmount.
#
# Usage: fio_test.sh TPDEFS_BIN [RESULTS_DIR]   (RESULTS_DIR defaults to $RESULTS_DIR)
# Results: RESULTS_DIR/mount_fio.count. Exits 77 (skip) without /dev/fuse, fusermount3,
# root or fio. The mount is made and always removed by mount_util.py's launcher.
set -u
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
name=mount_fio

if [ "${1:-}" = "--inner" ]; then
    # Runs under the launcher: $TPDEFS_MNT is mounted. Writes "pass fail" to $2.
    counts=$2 logdir=$3
    pass=0 fail=0
    run_job() { # name, expected bytes, ddir (read|write), fio args...
        local job=$1 bytes=$2 ddir=$3; shift 3
        local json=$logdir/$job.json log=$logdir/$job.log
        local t0=$SECONDS
        # in $logdir: fio leaves *-verify.state files in its working directory
        (cd "$logdir" && timeout 60 fio --name="$job" --ioengine=psync --direct=0 --fallocate=none \
            --verify_state_save=0 \
            --output-format=json --output="$json" "$@") >"$log" 2>&1
        local rc=$?
        local why
        why=$("$PY" - "$json" "$ddir" "$bytes" "$rc" "$log" <<'PY'
import json, sys
path, ddir, want, rc, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
problems = []
if rc != 0:
    problems.append(f"fio exit {rc}" + (" (timeout)" if rc == 124 else ""))
try:
    text = open(path).read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    if j["error"]:
        problems.append(f"job error {j['error']}")
    if j[ddir]["io_bytes"] < want:
        problems.append(f"{ddir} {j[ddir]['io_bytes']} of {want} bytes")
except Exception as e:
    problems.append(f"no usable JSON ({e})")
logtext = open(log, errors="replace").read() + (open(path, errors="replace").read() if rc else "")
bad = [l.strip() for l in logtext.splitlines() if "verify" in l.lower() and ("fail" in l.lower() or "bad" in l.lower())]
if bad:
    problems.append("verify failures: " + " | ".join(bad[:3]))
elif rc and logtext.strip():
    problems.append("output: " + " | ".join(l.strip() for l in logtext.strip().splitlines()[-4:]))
print("; ".join(problems))
PY
)
        if [ -z "$why" ]; then
            pass=$((pass + 1)); echo "PASS $job ($((SECONDS - t0)) s)"
        else
            fail=$((fail + 1)); echo "FAIL $job: $why"
        fi
    }
    M=$TPDEFS_MNT
    run_job seq_write $((64 << 20)) write --filename="$M/seq.dat" --rw=write --bs=1M \
        --size=64M --verify=xxhash --do_verify=0 --end_fsync=1
    run_job seq_verify_read $((64 << 20)) read --filename="$M/seq.dat" --rw=read --bs=1M \
        --size=64M --verify=xxhash
    run_job rand_write $((32 << 20)) write --filename="$M/rand.dat" --rw=randwrite --bs=64k \
        --size=32M --verify=xxhash --do_verify=1 --randseed=1234
    run_job rand_verify_read $((32 << 20)) read --filename="$M/rand.dat" --rw=randread \
        --bs=64k --size=32M --verify=xxhash --randseed=99
    echo "$pass $fail" >"$counts"
    exit 0
fi

TPDEFS=${1:?usage: fio_test.sh TPDEFS_BIN [RESULTS_DIR]}
RESULTS_DIR=${2:-${RESULTS_DIR:-}}
write_count() {
    [ -n "$RESULTS_DIR" ] || return 0
    mkdir -p "$RESULTS_DIR" && echo "$1 $2 $3" >"$RESULTS_DIR/$name.count"
}
why=$("$PY" -B -c "import sys; sys.path.insert(0, sys.argv[1]); import mount_util as m; print(m.skip_reason() or '')" "$here")
[ -n "$why" ] || command -v fio >/dev/null || why="fio is not installed"
if [ -n "$why" ]; then
    echo "SKIP $name: $why"
    write_count 0 0 1
    exit 77
fi

work=$(mktemp -d /tmp/tpdefs-fio-XXXXXX)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
"$PY" -B "$here/mount_util.py" run --daemon-rc "$work/daemon.rc" --timeout 100 "$TPDEFS" -- \
    bash "$0" --inner "$work/counts" "$work"
launcher_rc=$?
if [ -s "$work/counts" ]; then
    read -r p f <"$work/counts"
    pass=$((pass + p)) fail=$((fail + f))
else
    fail=$((fail + 1))
    echo "FAIL fio_jobs: no result (launcher exit $launcher_rc: the mount failed or the run was cut short)"
fi
daemon_rc=$(cat "$work/daemon.rc" 2>/dev/null || echo none)
if [ "$daemon_rc" = 0 ]; then
    pass=$((pass + 1)); echo "PASS daemon_clean_exit"
else
    fail=$((fail + 1)); echo "FAIL daemon_clean_exit: daemon exit status $daemon_rc"
fi
write_count "$pass" "$fail" 0
echo "$name: $pass passed, $fail failed"
[ "$fail" = 0 ]

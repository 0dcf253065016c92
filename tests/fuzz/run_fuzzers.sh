#!/bin/bash
# Runs each fuzzer for SECONDS from a fresh seed corpus; a crash fails the run and leaves
# the reproducer in RESULTS_DIR. Leaves "<passed> <failed>" in RESULTS_DIR/fuzz.count.
set -u
builddir=${1:?builddir} seconds=${2:?seconds} results=${3:?results dir}
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
"$builddir/tests/fuzz/make_fuzz_seeds" "$corpus"
pass=0 fail=0
for fuzzer in fuzz_decode; do
    if "$builddir/tests/fuzz/$fuzzer" -max_total_time="$seconds" -max_len=70000 -rss_limit_mb=2048 \
        -artifact_prefix="$results/$fuzzer-" -print_final_stats=1 "$corpus" > "$results/$fuzzer.log" 2>&1; then
        pass=$((pass + 1))
        echo "fuzz: $fuzzer ran ${seconds}s without a finding ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$results/$fuzzer.log" | grep -o '[0-9]*$') inputs)"
    else
        fail=$((fail + 1))
        echo "fuzz: $fuzzer FAILED, see $results/$fuzzer.log"
        tail -40 "$results/$fuzzer.log"
    fi
done
echo "$pass $fail" > "$results/fuzz.count"
[ "$fail" -eq 0 ]

#!/bin/bash
# Runs the codec decoder fuzzer for SECONDS and each parser fuzzer (checkpoint formats, store
# object files and version records) for a third of that, from fresh seed corpora; a crash
# fails the run and leaves the reproducer in RESULTS_DIR. Leaves "<passed> <failed>" in
# RESULTS_DIR/fuzz.count.
set -u
builddir=${1:?builddir} seconds=${2:?seconds} results=${3:?results dir}
corpus=$(mktemp -d)
formats=$(mktemp -d)
trap 'rm -rf "$corpus" "$formats"' EXIT
"$builddir/tests/fuzz/make_fuzz_seeds" "$corpus"
/usr/bin/python3 "$(dirname "$0")/make_format_seeds.py" "$formats" || echo "fuzz: no format seeds (python)"
"$builddir/tests/fuzz/make_store_seeds" "$formats" || echo "fuzz: no store seeds"
pass=0 fail=0
for fuzzer in fuzz_decode fuzz_torch_zip fuzz_safetensors fuzz_npy fuzz_distcp fuzz_pickle fuzz_stream \
    fuzz_dcp_metadata fuzz_object fuzz_record; do
    if [ "$fuzzer" = fuzz_decode ]; then
        dir=$corpus time=$seconds
    else
        dir=$(mktemp -d -p "$formats") time=$(( (seconds + 2) / 3 ))
        case $fuzzer in
            fuzz_object) seeds=object ;;
            fuzz_record) seeds=record ;;
            *) seeds=a ;;
        esac
        cp "$formats"/"$seeds".* "$dir"/ 2>/dev/null || true
    fi
    if "$builddir/tests/fuzz/$fuzzer" -max_total_time="$time" -max_len=70000 -rss_limit_mb=2048 \
        -artifact_prefix="$results/$fuzzer-" -print_final_stats=1 "$dir" > "$results/$fuzzer.log" 2>&1; then
        pass=$((pass + 1))
        echo "fuzz: $fuzzer ran ${time}s without a finding ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$results/$fuzzer.log" | grep -o '[0-9]*$') inputs)"
    else
        fail=$((fail + 1))
        echo "fuzz: $fuzzer FAILED, see $results/$fuzzer.log"
        tail -40 "$results/$fuzzer.log"
    fi
done
echo "$pass $fail" > "$results/fuzz.count"
[ "$fail" -eq 0 ]

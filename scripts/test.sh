#!/bin/bash
# Runs every test: installs and builds (scripts/setup.sh), runs the meson test suite, builds
# the decoder fuzzer with clang and runs it for FUZZ_SECONDS (default 60), then prints one
# summary line "N passed, N failed[, N skipped]" counting individual test cases.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

results=build/tests/results
rm -rf "$results"
mkdir -p "$results"
meson test -C build --print-errorlogs
meson_rc=$?

# Fuzzing: a separate clang build with libFuzzer and sanitizers.
fuzz_seconds=${FUZZ_SECONDS:-60}
fuzz_rc=0
if [ "$fuzz_seconds" -gt 0 ]; then
    if [ ! -f build-fuzz/build.ninja ]; then
        CXX=clang++ CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Dbenchmarks=false -Dstatic_runtime=false \
            --buildtype=debugoptimized -Db_ndebug=false >/dev/null || fuzz_rc=1
    fi
    if [ $fuzz_rc -eq 0 ] && ninja -C build-fuzz >/dev/null; then
        ./tests/fuzz/run_fuzzers.sh build-fuzz "$fuzz_seconds" "$results" || fuzz_rc=1
    else
        echo "fuzz: build failed" >&2
        echo "0 1 0" > "$results/fuzz-build.count"
        fuzz_rc=1
    fi
fi

/usr/bin/python3 scripts/test_summary.py "$results" build/meson-logs/testlog.json
summary_rc=$?
[ $meson_rc -eq 0 ] && [ $fuzz_rc -eq 0 ] && [ $summary_rc -eq 0 ]

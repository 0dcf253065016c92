#!/bin/bash
# Runs every test: installs and builds (scripts/setup.sh), runs the meson test suite, builds
# the decoder fuzzer with clang and runs it for FUZZ_SECONDS (default 60), runs the unit, CLI
# and mount suites again in an ASan+UBSan build and the concurrency-heavy unit suites in a
# TSan build (SANITIZE=0 skips both), then prints one summary line
# "N passed, N failed[, N skipped]" counting individual test cases.
# Time on 2 cores, fresh clone, packages installed: see the budget in .ci/run.
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
    # Only the fuzzers and their seed makers: the instrumented daemon and tools are not run.
    fuzz_targets=$(ninja -C build-fuzz -t targets all 2>/dev/null | sed -n 's|^\(tests/fuzz/[a-z_]*\): .*|\1|p')
    # shellcheck disable=SC2086 # a list of targets
    if [ $fuzz_rc -eq 0 ] && [ -n "$fuzz_targets" ] && ninja -C build-fuzz $fuzz_targets >/dev/null; then
        ./tests/fuzz/run_fuzzers.sh build-fuzz "$fuzz_seconds" "$results" || fuzz_rc=1
    else
        echo "fuzz: build failed" >&2
        echo "0 1 0" > "$results/fuzz-build.count"
        fuzz_rc=1
    fi
fi

# Sanitizers. Each build runs its suites with every report written to a file (a daemon's
# stderr is not the test's), and a report of any kind fails the run: the file's first lines
# are printed. debugoptimized keeps assertions on.
summaries=("$results" build/meson-logs/testlog.json)
sanitizer_rc=0
run_sanitized() { # BUILDDIR SANITIZERS TARGETS TESTS...
    local dir=$1 sanitizers=$2 targets=$3
    shift 3
    local reports=$dir/sanitizer-reports
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Db_sanitize="$sanitizers" -Dstatic_runtime=false -Dbenchmarks=false \
            --buildtype=debugoptimized >/dev/null || { sanitizer_rc=1; return; }
    fi
    # shellcheck disable=SC2086 # TARGETS is a list
    ninja -C "$dir" $targets >/dev/null || { echo "$dir: build failed" >&2; sanitizer_rc=1; return; }
    rm -rf "$reports" "$dir/tests/results"
    mkdir -p "$reports" "$dir/tests/results"
    local opts="log_path=$(realpath "$reports")/report"
    ASAN_OPTIONS="$opts:detect_leaks=1" UBSAN_OPTIONS="$opts:print_stacktrace=1" \
        TSAN_OPTIONS="$opts:second_deadlock_stack=1" \
        meson test -C "$dir" --no-rebuild --print-errorlogs "$@" || sanitizer_rc=1
    local n
    n=$(find "$reports" -type f | wc -l)
    if [ "$n" -eq 0 ]; then
        echo "$dir ($sanitizers): no sanitizer reports"
        echo "1 0" > "$dir/tests/results/sanitizer_reports.count"
    else
        echo "$dir ($sanitizers): $n sanitizer report(s):" >&2
        find "$reports" -type f | head -5 | while read -r f; do echo "== $f" >&2; head -40 "$f" >&2; done
        echo "0 1" > "$dir/tests/results/sanitizer_reports.count"
        sanitizer_rc=1
    fi
    summaries+=("$dir/tests/results" "$dir/meson-logs/testlog.json")
}
if [ "${SANITIZE:-1}" != 0 ]; then
    run_sanitized build-asan address,undefined "tpde tpdefs tests/util_tests tests/codec_tests \
        tests/format_tests tests/cache_tests tests/store_tests tests/fs_tests" \
        util_unit codec_unit format_unit cache_unit store_unit fs_unit tpde_cli store_cli \
        mount_posix_parity mount_concurrency mount_full_disk mount_fio
    run_sanitized build-tsan thread "tests/util_tests tests/cache_tests tests/store_tests" \
        util_unit cache_unit store_unit
fi

/usr/bin/python3 scripts/test_summary.py "${summaries[@]}"
summary_rc=$?
[ $meson_rc -eq 0 ] && [ $fuzz_rc -eq 0 ] && [ $sanitizer_rc -eq 0 ] && [ $summary_rc -eq 0 ]

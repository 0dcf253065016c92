#!/usr/bin/python3
"""Prints the closing line of a test run: "N passed, N failed[, N skipped]".

Usage: test_summary.py RESULTS_DIR TESTLOG_JSON [RESULTS_DIR TESTLOG_JSON ...] (one pair per
build: the release build, the sanitizer builds).

Counts individual test cases: gtest cases from the JUnit XML files the gtest binaries
write, and for script tests the "<passed> <failed> [<skipped>]" lines they leave in
*.count files. A meson test that failed without leaving a result (a crash, a timeout)
counts as one failure on top. Exits 1 when anything failed or nothing ran.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0


def count(results_dir, testlog):
    global passed, failed, skipped
    reported = set()

    for path in glob.glob(os.path.join(results_dir, "*.xml")):
        reported.add(os.path.splitext(os.path.basename(path))[0])
        for case in ET.parse(path).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None or case.get("result") == "skipped":
                skipped += 1
            else:
                passed += 1

    for path in glob.glob(os.path.join(results_dir, "*.count")):
        reported.add(os.path.splitext(os.path.basename(path))[0])
        nums = [int(x) for x in open(path).read().split()]
        passed += nums[0]
        failed += nums[1]
        skipped += nums[2] if len(nums) > 2 else 0

    if os.path.exists(testlog):
        for line in open(testlog):
            t = json.loads(line)
            name, result = t.get("name", ""), t.get("result", "")
            if result in ("FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"):
                # Its cases' failures are counted above; a run that died before reporting any
                # must not vanish from the total.
                if name not in reported:
                    failed += 1
            elif result == "SKIP" and name not in reported:
                skipped += 1


args = sys.argv[1:]
if not args or len(args) % 2:
    sys.exit("usage: test_summary.py RESULTS_DIR TESTLOG_JSON [RESULTS_DIR TESTLOG_JSON ...]")
for i in range(0, len(args), 2):
    count(args[i], args[i + 1])

line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)

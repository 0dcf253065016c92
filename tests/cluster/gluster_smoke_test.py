#!/usr/bin/python3
"""Smoke test of the gluster harness: a 2-client cluster comes up, the clients see each
other's writes after close, an O_EXCL race has exactly one winner, a lock conflicts
across clients, and everything is gone after down. Exit 77 (skip) where it cannot run.

Run: /usr/bin/python3 tests/cluster/gluster_smoke_test.py [--netns]
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gluster_cluster as gcl  # noqa: E402
import gluster_probe as probe  # noqa: E402


def main():
    netns = "--netns" in sys.argv
    reason = gcl.skip_reason(netns=netns)
    if reason:
        print(f"SKIP: {reason}")
        return 77
    failures, checks = [], []

    def check(ok, what):
        checks.append(what)
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    with gcl.GlusterCluster(clients=2, netns=netns) as gc:
        a, b = (c.mount for c in gc.clients)
        probe._write(f"{a}/hello", b"from A", fsync=False)
        check(probe._read(f"{b}/hello") == b"from A", "B reads A's file after A's close")
        one, both, none, errs, mismatch = probe.race(gc, "excl", 100)
        check((one, both, none, errs, mismatch) == (100, 0, 0, [], 0), f"O_EXCL: one winner in each of 100 races ({one}, {both}, {none}, {errs[:2]}, {mismatch})")
        h = probe.Holder(f"{a}/lock", "posix")
        check(not probe.try_lock(f"{b}/lock", "posix"), "posix lock held on A conflicts on B")
        h.stop()
        check(probe.try_lock(f"{b}/lock", "posix"), "lock free on B after the holder exits")
        gc.kill_client(0)
        gc.remount(0)
        check(probe._read(f"{gc.clients[0].mount}/hello") == b"from A", "remount after kill -9 of a client")
        print(f"up {gc.timings['up']:.1f} s", flush=True)
    mounts = subprocess.run(["grep", "-c", gc.base, "/proc/self/mountinfo"], capture_output=True, text=True).stdout.strip()
    check(mounts == "0" and not gcl._pids_naming(gc.base) and not os.path.exists(gc.base),
          f"nothing left after down ({gc.timings['down']:.1f} s)")
    print(f"{len(checks) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

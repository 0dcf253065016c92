#!/usr/bin/python3
"""The systemd units of packaging/systemd, as far as a machine without systemd as PID 1
allows:

- `systemd-analyze verify` of tpdefs@.service (an instance) and the example .mount unit,
  with our man pages on MANPATH (their Documentation= must exist) and the build's tpdefs in
  ExecStart: no error, no warning;
- the service's start and stop as systemd would run them: its ExecStart line, with the
  variables of a configuration file (example.conf's form) expanded as systemd expands them
  (${VAR} one word, $VAR split at spaces), run with NOTIFY_SOCKET pointing at a datagram
  socket of this test (a path, and an abstract @name). READY=1 must come only once the mount
  answers (it is in mountinfo and a stat of its root returns), with MAINPID the daemon's
  pid; then SIGTERM (KillSignal's default) while a file is open for writing: STOPPING=1, exit
  status 0, the file committed (read back from the store with tpde cat), no mount left;
- a start that fails (mount point not empty) sends no READY=1 and exits 1.

Not tested here (no systemd PID 1): systemctl start/stop, the unit's ordering, Restart=,
ExecStopPost= after a crash, the journal, the .mount unit run by systemd.

Usage: systemd_test.py TPDEFS SOURCE_ROOT [RESULTS_DIR]; results in
RESULTS_DIR/systemd_units.count. Exits 77 (skip) without /dev/fuse, fusermount3 or root.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from mount_util import Results, is_mounted, require_mount, set_pdeathsig, _fusermount

TPDEFS = os.path.abspath(sys.argv[1])
TPDE = os.path.join(os.path.dirname(TPDEFS), "tpde")
ROOT = sys.argv[2]
UNITS = os.path.join(ROOT, "packaging", "systemd")
res = Results("systemd_units", sys.argv[3] if len(sys.argv) > 3 else None)
require_mount(res, TPDEFS)
BASE = tempfile.mkdtemp(prefix="tpdefs-systemd-")


def unit_value(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    return None


def verify():
    if not shutil.which("systemd-analyze"):
        res.skip_one("systemd_analyze_verify_service", "systemd-analyze is not installed")
        res.skip_one("systemd_analyze_verify_mount", "systemd-analyze is not installed")
        return
    d = os.path.join(BASE, "verify")
    for sec, pages in (("1", ["tpdefs.1", "tpde.1"]), ("8", ["mount.tpdefs.8"])):
        os.makedirs(os.path.join(d, "man", "man" + sec))
        for p in pages:
            shutil.copy(os.path.join(ROOT, "packaging", p), os.path.join(d, "man", "man" + sec))
    with open(os.path.join(UNITS, "tpdefs@.service")) as f:
        text = f.read().replace("/usr/bin/tpdefs", TPDEFS)
    with open(os.path.join(d, "tpdefs@.service"), "w") as f:
        f.write(text)
    shutil.copy(os.path.join(UNITS, "mnt-checkpoints.mount"), d)
    env = dict(os.environ, MANPATH=os.path.join(d, "man"))
    for name, unit in (("service", "tpdefs@example.service"),
                       ("mount", "mnt-checkpoints.mount")):
        r = subprocess.run(["systemd-analyze", "verify", os.path.join(d, unit)], cwd=d,
                           capture_output=True, text=True, env=env, timeout=60)
        res.check(f"systemd_analyze_verify_{name}", r.returncode == 0 and not r.stderr.strip(),
                  f"rc {r.returncode}: {r.stderr.strip()}")


def expand(execstart, env):
    """ExecStart's words as systemd expands them: ${VAR} is one word, $VAR splits."""
    words = []
    for w in execstart.split():
        m = re.fullmatch(r"\$\{(\w+)\}", w)
        if m:
            words.append(env.get(m.group(1), ""))
            continue
        m = re.fullmatch(r"\$(\w+)", w)
        if m:
            words += env.get(m.group(1), "").split()
            continue
        words.append(w)
    return words


def read_conf(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


class Listener:
    """A NOTIFY_SOCKET: collects the datagrams, each with the time it came."""

    def __init__(self, address, bind_to):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.2)
        self.messages = []
        self.events = {}
        self._stop = False
        self.on_ready = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(l.split("=", 1) for l in data.splitlines() if "=" in l)
            self.messages.append(fields)
            if fields.get("READY") == "1" and self.on_ready:
                self.on_ready(fields)
            for k in ("READY", "STOPPING"):
                if k in fields:
                    self.events.setdefault(k, threading.Event()).set()

    def wait(self, key, timeout):
        return self.events.setdefault(key, threading.Event()).wait(timeout)

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def stat_answers(path, timeout=5):
    done = []
    t = threading.Thread(target=lambda: done.append(os.stat(path)), daemon=True)
    t.start()
    t.join(timeout)
    return bool(done)


def start_stop(kind):
    work = os.path.join(BASE, kind)
    os.makedirs(os.path.join(work, "mnt"))
    conf = os.path.join(work, "test.conf")
    with open(conf, "w") as f:       # the form of example.conf
        f.write(f"STORE={work}/store\nMOUNTPOINT={work}/mnt\nOPTIONS=-o cache_mib=64 "
                "--log-level info\n")
    example = read_conf(os.path.join(UNITS, "example.conf"))
    res.check(f"{kind}_example_conf_has_the_variables",
              {"STORE", "MOUNTPOINT", "OPTIONS"} <= set(example), sorted(example))
    env = read_conf(conf)
    execstart = unit_value(os.path.join(UNITS, "tpdefs@.service"), "ExecStart")
    argv = expand(execstart, env)
    argv[0] = argv[0].replace("/usr/bin/tpdefs", TPDEFS)
    if kind == "abstract":
        name = f"@tpdefs-test-{os.getpid()}"
        listener = Listener(name, "\0" + name[1:])
    else:
        name = os.path.join(work, "notify.sock")
        listener = Listener(name, name)
    seen_at_ready = {}

    def on_ready(fields):  # runs when READY=1 arrives: is the mount there and answering?
        seen_at_ready["mounted"] = is_mounted(env["MOUNTPOINT"])
        seen_at_ready["answers"] = stat_answers(env["MOUNTPOINT"])
        seen_at_ready["fields"] = fields
    listener.on_ready = on_ready
    log = open(os.path.join(work, "daemon.log"), "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=name), preexec_fn=set_pdeathsig)
    try:
        ready = listener.wait("READY", 20)
        res.check(f"{kind}_ready_once_the_mount_answers",
                  ready and seen_at_ready.get("mounted") and seen_at_ready.get("answers"),
                  f"READY={ready} {seen_at_ready}; {open(log.name).read()[-500:]}")
        fields = seen_at_ready.get("fields", {})
        res.check(f"{kind}_ready_names_mainpid_and_status",
                  fields.get("MAINPID") == str(proc.pid) and "serving" in fields.get("STATUS", ""),
                  f"{fields} (pid {proc.pid})")
        if not ready:
            return
        data = os.urandom(3 << 20)
        fd = os.open(os.path.join(env["MOUNTPOINT"], "open-at-stop.bin"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)                  # written, not closed: the stop must commit it
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        try:
            os.close(fd)
        except OSError:
            pass                            # the mount is gone
        res.check(f"{kind}_sigterm_stops_cleanly", rc == 0 and listener.wait("STOPPING", 1) and
                  not is_mounted(env["MOUNTPOINT"]),
                  f"rc {rc}, messages {listener.messages}; {open(log.name).read()[-500:]}")
        r = subprocess.run([TPDE, "cat", env["STORE"], "open-at-stop.bin"], capture_output=True,
                           timeout=60)
        res.check(f"{kind}_open_file_committed_at_stop", r.returncode == 0 and r.stdout == data,
                  f"rc {r.returncode}, {len(r.stdout)} of {len(data)} bytes: {r.stderr[-300:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(env["MOUNTPOINT"]):
            _fusermount(["-uz"], env["MOUNTPOINT"])
        listener.close()
        log.close()


def failed_start():
    work = os.path.join(BASE, "fails")
    os.makedirs(os.path.join(work, "mnt"))
    open(os.path.join(work, "mnt", "something"), "w").close()
    name = os.path.join(work, "notify.sock")
    listener = Listener(name, name)
    r = subprocess.run([TPDEFS, "--foreground", os.path.join(work, "store"),
                        os.path.join(work, "mnt")], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, NOTIFY_SOCKET=name))
    time.sleep(0.3)
    res.check("failed_start_sends_no_ready",
              r.returncode == 1 and not any(m.get("READY") for m in listener.messages),
              f"rc {r.returncode}, {listener.messages}: {r.stderr.strip()}")
    listener.close()


try:
    verify()
    start_stop("path")
    start_stop("abstract")
    failed_start()
finally:
    if BASE not in open("/proc/self/mountinfo").read():
        shutil.rmtree(BASE, ignore_errors=True)
res.finish()

#!/usr/bin/python3
"""A throw-away GlusterFS cluster on one machine, for tests of several tpdefs "hosts".

One glusterd, one volume on 1..n local brick directories, and N FUSE client mounts of
that volume. Each client mount stands for one host: its own glusterfs client process
(so a test can kill -9 or SIGSTOP one "host"), optionally its own network namespace (so
a test can cut that host's network while its processes live on).

Everything lives under one base directory (default /tmp/tpdefs-gluster, env
TPDEFS_GLUSTER_DIR; TPDEFS_GLUSTER_KEEP_LOGS=DIR copies the logs there at teardown):
glusterd's state (working-directory and run-directory point there,
not /var/lib/glusterd), bricks, mount points, logs. Teardown finds what to remove from
that directory's name alone (mounts under it, processes whose command line names it,
namespaces with our prefix), so `down` also cleans up after a run that was killed.

Python 3 standard library only: CI tests import it.

    from gluster_cluster import GlusterCluster, skip_reason
    reason = skip_reason(netns=False)
    if reason: print("SKIP:", reason); sys.exit(77)
    with GlusterCluster(clients=2) as gc:
        a, b = gc.clients
        open(f"{a.mount}/x", "w").write("hi")
        gc.freeze_client(0)          # SIGSTOP host A's glusterfs client
        gc.thaw_client(0)

CLI: gluster_cluster.py up [--clients N] [--bricks N] [--netns] [--defaults] | down | status
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

GLUSTERD = "/usr/sbin/glusterd"
GLUSTERFS = "/usr/sbin/glusterfs"
GLUSTER = "/usr/sbin/gluster"
BASE_DIR = os.environ.get("TPDEFS_GLUSTER_DIR", "/tmp/tpdefs-gluster")
VOLUME = "tpdefs"
NS_PREFIX = "tpg"           # every netns / link we create starts with this
SERVER_NS = NS_PREFIX + "srv"
BRIDGE = NS_PREFIX + "br0"
# A /24 that exists only inside our own namespaces: the server's bridge and the clients'
# veths. Nothing in the root namespace gets an address or a route into it.
SUBNET = "10.199.17"
SERVER_IP = SUBNET + ".1"

# Volume options (measured by gluster_probe.py, see docs/cluster-glusterfs-facts.md).
STRICT_VOLUME_OPTIONS = {
    # Needed for close-to-open across clients: the metadata cache (stat-prefetch is
    # md-cache), quick-read and open-behind serve a second client stale bytes and names.
    "performance.stat-prefetch": "off",
    "performance.quick-read": "off",
    "performance.open-behind": "off",
    # Honest errors: with write-behind a write's ENOSPC shows only at a later write or
    # at close; without it, at the failing write. flush-behind off: close waits for the
    # flush (defensive; close reported errors either way in the probe).
    "performance.write-behind": "off",
    "performance.flush-behind": "off",
    # After a reconnect, fds that held POSIX locks stay bad (EBADFD) instead of being
    # reopened without their locks: a partitioned lock holder learns it lost the lock.
    "client.strict-locks": "on",
    # Off by default in 10.3 already; stated so a changed default cannot creep in.
    "performance.io-cache": "off",
    "performance.read-ahead": "off",
    "performance.readdir-ahead": "off",
    "performance.nl-cache": "off",
}
# FUSE kernel caches off: every lookup/getattr goes to the client process, and the
# page cache is dropped at open (so an open after another host's close reads new bytes).
STRICT_CLIENT_OPTIONS = [
    "--attribute-timeout=0",
    "--entry-timeout=0",
    "--negative-timeout=0",
    "--fopen-keep-cache=off",
]


def _log(msg):
    if os.environ.get("TPDEFS_GLUSTER_QUIET") != "1":
        print(f"[gluster_cluster] {msg}", file=sys.stderr, flush=True)


def _run(argv, check=True, timeout=60, **kw):
    """Run argv, capture output; on failure raise with the command's stderr."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> rc {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def _wait(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _mounts_under(base):
    """Mount points (deepest first) under base, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return sorted(set(out), key=len, reverse=True)


def _pids_naming(base):
    """Pids of gluster processes whose command line mentions base (ours, no one else's)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and b"gluster" in os.path.basename(argv[0]) and any(base.encode() in a for a in argv):
            pids.append(int(d))
    return pids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill_and_wait(pids, timeout=5.0):
    """SIGTERM, then SIGKILL after timeout; a stopped process gets SIGCONT so it can die."""
    gone = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone += [p for p in pids if not _alive(p)]
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    # Dead daemons are zombies of init until it reaps them (a moment here): wait for
    # that, so a `pgrep gluster` right after teardown finds nothing.
    deadline = time.monotonic() + 2
    while any(os.path.exists(f"/proc/{p}") for p in gone) and time.monotonic() < deadline:
        time.sleep(0.02)


def _netns_list():
    try:
        return [l.split()[0] for l in _run(["ip", "netns", "list"], check=False).stdout.splitlines() if l.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def _port_in_use(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return False
        except OSError:
            return True


def skip_reason(netns=False):
    """None if a cluster can run here, else why not (tests print it and exit 77)."""
    if os.geteuid() != 0:
        return "needs root (glusterd, FUSE mounts)"
    for exe in (GLUSTERD, GLUSTERFS, GLUSTER):
        if not os.access(exe, os.X_OK):
            return f"{exe} missing (apt-get install glusterfs-server glusterfs-client)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    if netns:
        if not shutil.which("ip") or not shutil.which("nsenter"):
            return "netns mode needs iproute2 (ip) and util-linux (nsenter)"
        probe = NS_PREFIX + "probe"
        if _run(["ip", "netns", "add", probe], check=False).returncode != 0:
            return "cannot create network namespaces here"
        _run(["ip", "netns", "del", probe], check=False)
    else:
        if _port_in_use(24007) and not _pids_naming(BASE_DIR):
            return "port 24007 taken by another glusterd (use netns mode, or stop it)"
        try:   # the bricks are named by the host name; glusterd must find it local
            socket.gethostbyname(socket.gethostname())
        except OSError:
            return f"host name {socket.gethostname()!r} does not resolve (add it to /etc/hosts)"
    return None


class Client:
    """One "host": a glusterfs FUSE client process and its mount point."""

    def __init__(self, index, mount, netns, ip, log, pidfile):
        self.index, self.mount, self.netns, self.ip = index, mount, netns, ip
        self.log, self.pidfile = log, pidfile
        self.pid = None          # the glusterfs client process (kill -9 it to "crash" it)
        self.veth_host = f"{NS_PREFIX}c{index}h" if netns else None   # server-side end
        self.cut = None          # how its network is cut now: None, "drop", "link"

    def nsenter(self):
        """argv prefix that runs a command with this host's network (nothing if no netns)."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []

    def as_dict(self):
        return {k: getattr(self, k) for k in ("index", "mount", "pid", "netns", "ip", "log", "veth_host")}


class GlusterCluster:
    """Start with up() or `with`; always torn down by down(), atexit, or SIGTERM/SIGINT/SIGHUP."""

    def __init__(self, clients=2, bricks=1, netns=False, strict=True, volume_options=None,
                 client_options=None, base_dir=BASE_DIR, volume=VOLUME, teardown_at_exit=True,
                 brick_mib=None):
        """brick_mib: each brick on its own tmpfs of that size (a full-disk test fills it
        in seconds); default: plain directories on the base dir's filesystem."""
        self.n_clients, self.n_bricks, self.netns = clients, bricks, netns
        self.brick_mib = brick_mib
        self.volume, self.base = volume, os.path.abspath(base_dir)
        opts = dict(STRICT_VOLUME_OPTIONS) if strict else {}
        opts.update(volume_options or {})
        self.volume_options = opts
        self.client_options = list(STRICT_CLIENT_OPTIONS if strict else []) + list(client_options or [])
        self.teardown_at_exit = teardown_at_exit
        self.run_dir = f"{self.base}/run"
        self.work_dir = f"{self.base}/glusterd"
        self.log_dir = f"{self.base}/log"
        self.sock = f"{self.run_dir}/glusterd.socket"
        self.server_host = SERVER_IP if netns else socket.gethostname()
        self.clients = []
        self.timings = {}
        self._up = False

    # ----- gluster CLI -----
    def gluster(self, *args, check=True, timeout=120):
        """Run `gluster --mode=script ARGS` against our glusterd (its private socket)."""
        return _run([GLUSTER, f"--glusterd-sock={self.sock}", "--mode=script",
                     f"--log-file={self.log_dir}/cli.log", *args], check=check, timeout=timeout)

    def set_option(self, key, value):
        self.gluster("volume", "set", self.volume, key, str(value))

    def _server_prefix(self):
        return ["nsenter", f"--net=/var/run/netns/{SERVER_NS}"] if self.netns else []

    # ----- up -----
    def up(self):
        reason = skip_reason(self.netns)
        if reason:
            raise RuntimeError("cannot start a gluster cluster: " + reason)
        t0 = time.monotonic()
        down_leftovers(self.base)    # a crashed earlier run must not get in the way
        self._up = True              # from here on, down() has something to do
        if self.teardown_at_exit:
            _register_teardown(self)
        for d in (self.run_dir, self.work_dir, self.log_dir, f"{self.base}/bricks", f"{self.base}/mnt"):
            os.makedirs(d, exist_ok=True)
        self._snapshot_system_dirs()
        if self.netns:
            self._net_up()
        self._start_glusterd()
        t1 = time.monotonic()
        self._create_volume()
        t2 = time.monotonic()
        for i in range(self.n_clients):
            self.clients.append(self._new_client(i))
            self.mount_client(i)
        t3 = time.monotonic()
        self.timings.update(up_glusterd=t1 - t0, up_volume=t2 - t1, up_mounts=t3 - t2, up=t3 - t0)
        self._save_state()
        _log(f"up in {t3 - t0:.1f}s (glusterd {t1 - t0:.1f}s, volume {t2 - t1:.1f}s, "
             f"{self.n_clients} mounts {t3 - t2:.1f}s)")
        return self

    def _snapshot_system_dirs(self):
        # glusterd and the bricks still create a few things at fixed paths (sockets in
        # /var/run/gluster, empty dirs in /var/lib/glusterd, brick logs): remember what
        # was there, so down() removes only what this run added.
        snap = {}
        for d in ("/var/run/gluster", "/var/lib/glusterd", "/var/log/glusterfs/bricks"):
            snap[d] = sorted(os.listdir(d)) if os.path.isdir(d) else None
        with open(f"{self.base}/system-dirs.json", "w") as f:
            json.dump(snap, f)

    def _net_up(self):
        # Server namespace with a bridge; every client namespace hangs on it by a veth
        # whose other end lives in the server namespace (so link-down of one host is
        # `ip -n tpgsrv link set tpgcNh down`, and nothing touches the root namespace).
        ip = lambda *a: _run(["ip", *a])
        ip("netns", "add", SERVER_NS)
        ip("-n", SERVER_NS, "link", "set", "lo", "up")
        ip("-n", SERVER_NS, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", SERVER_NS, "addr", "add", f"{SERVER_IP}/24", "dev", BRIDGE)
        ip("-n", SERVER_NS, "link", "set", BRIDGE, "up")
        for i in range(self.n_clients):
            ns, host_end = f"{NS_PREFIX}c{i}", f"{NS_PREFIX}c{i}h"
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", host_end, "netns", SERVER_NS)
            ip("-n", ns, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", SERVER_NS, "link", "set", host_end, "master", BRIDGE)
            ip("-n", SERVER_NS, "link", "set", host_end, "up")

    def _start_glusterd(self):
        # Own volfile: working-directory and run-directory in our base dir keep the
        # volume definitions out of /var/lib/glusterd, and the CLI socket is private.
        vol = f"{self.base}/glusterd.vol"
        with open(vol, "w") as f:
            f.write(f"""volume management
    type mgmt/glusterd
    option working-directory {self.work_dir}
    option run-directory {self.run_dir}
    option glusterd-sockfile {self.sock}
    option transport-type socket
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
""")
        _run(self._server_prefix() + [GLUSTERD, "-f", vol, "-p", f"{self.run_dir}/glusterd.pid",
                                      f"--log-file={self.log_dir}/glusterd.log"])
        _wait(lambda: self.gluster("pool", "list", check=False, timeout=10).returncode == 0, 60,
              "glusterd to answer `gluster pool list`", interval=0.1)

    def _create_volume(self):
        bricks = []
        for b in range(self.n_bricks):
            path = f"{self.base}/bricks/b{b}"
            os.makedirs(path, exist_ok=True)
            if self.brick_mib:    # tmpfs keeps trusted.* and user.* xattrs, as gluster needs
                _run(["mount", "-t", "tmpfs", "-o", f"size={self.brick_mib}m", "tpg-brick", path])
            bricks.append(f"{self.server_host}:{path}")
        # force: the bricks are on the root filesystem, which gluster refuses otherwise.
        self.gluster("volume", "create", self.volume, *bricks, "force")
        if self.volume_options:   # one call for all: each `volume set` costs ~0.4 s
            self.gluster("volume", "set", self.volume,
                         *[x for kv in self.volume_options.items() for x in kv])
        self.gluster("volume", "start", self.volume)
        _wait(self._bricks_online, 60, "bricks online", interval=0.1)

    def _bricks_online(self):
        out = self.gluster("volume", "status", self.volume, "detail", check=False).stdout
        return out.count("Online               : Y") >= self.n_bricks

    def _new_client(self, i):
        ns = f"{NS_PREFIX}c{i}" if self.netns else None
        ip = f"{SUBNET}.{10 + i}" if self.netns else None
        mnt = f"{self.base}/mnt/c{i}"
        os.makedirs(mnt, exist_ok=True)
        return Client(i, mnt, ns, ip, f"{self.log_dir}/client{i}.log", f"{self.run_dir}/client{i}.pid")

    # ----- clients -----
    def mount_client(self, i):
        """(Re)mount client i: the glusterfs binary itself, as mount.glusterfs mangles
        `-o fopen-keep-cache=off` into an option the client rejects."""
        c = self.clients[i]
        argv = c.nsenter() + [GLUSTERFS, "--process-name", "fuse",
                              f"--volfile-server={self.server_host}", f"--volfile-id=/{self.volume}",
                              f"--log-file={c.log}", f"--pid-file={c.pidfile}",
                              *self.client_options, c.mount]
        _run(argv)
        # The mount exists before the client has reached the brick; a stat of the root
        # fails (ENOTCONN) until it has.
        _wait(lambda: c.mount in _mounts_under(c.mount) and os.stat(c.mount) is not None, 30,
              f"client {i} mount")
        with open(c.pidfile) as f:
            c.pid = int(f.read().strip())
        self._save_state()

    def unmount_client(self, i):
        c = self.clients[i]
        if c.pid and _alive(c.pid):
            os.kill(c.pid, signal.SIGCONT)   # a frozen client would hang the unmount
        if c.mount in _mounts_under(c.mount):
            _unmount(c.mount)
        if c.pid and _alive(c.pid):
            _kill_and_wait([c.pid])
        c.pid = None

    def remount(self, i):
        """After a kill/freeze test: a fresh client process for host i."""
        self.restore_network(i)
        self.unmount_client(i)
        self.mount_client(i)

    def kill_client(self, i, sig=signal.SIGKILL):
        os.kill(self.clients[i].pid, sig)

    def freeze_client(self, i):
        os.kill(self.clients[i].pid, signal.SIGSTOP)

    def thaw_client(self, i):
        os.kill(self.clients[i].pid, signal.SIGCONT)

    def cut_network(self, i, how="drop"):
        """Partition host i. "drop": iptables in its namespace drops every packet (peers
        see silence, as with a pulled cable upstream); "link": its veth goes down."""
        c = self.clients[i]
        if not c.netns:
            raise RuntimeError("cut_network needs netns=True")
        if how == "drop":
            for chain in ("INPUT", "OUTPUT"):
                _run(["ip", "netns", "exec", c.netns, "iptables", "-I", chain, "-j", "DROP"])
        elif how == "link":
            _run(["ip", "-n", SERVER_NS, "link", "set", c.veth_host, "down"])
        else:
            raise ValueError(how)
        c.cut = how

    def restore_network(self, i):
        c = self.clients[i]
        if c.cut == "drop":
            for chain in ("INPUT", "OUTPUT"):
                _run(["ip", "netns", "exec", c.netns, "iptables", "-D", chain, "-j", "DROP"], check=False)
        elif c.cut == "link":
            _run(["ip", "-n", SERVER_NS, "link", "set", c.veth_host, "up"], check=False)
        c.cut = None

    # ----- state / down -----
    def info(self):
        return {"base": self.base, "volume": self.volume, "server": self.server_host,
                "netns": self.netns, "bricks": self.n_bricks, "brick_mib": self.brick_mib,
                "volume_options": self.volume_options,
                "client_options": self.client_options, "clients": [c.as_dict() for c in self.clients],
                "timings": {k: round(v, 2) for k, v in self.timings.items()}}

    def _save_state(self):
        if os.path.isdir(self.base):
            with open(f"{self.base}/state.json", "w") as f:
                json.dump(self.info(), f, indent=1)

    def down(self):
        """Idempotent; also safe from a signal handler or atexit."""
        if not self._up:
            return
        self._up = False
        t0 = time.monotonic()
        for c in self.clients:
            try:
                self.restore_network(c.index)
                self.unmount_client(c.index)
            except Exception as e:         # go on: the rest must be removed anyway
                _log(f"unmount client {c.index}: {e}")
        t1 = time.monotonic()
        try:   # stopping the volume stops the brick processes; glusterd alone would leave them
            if os.path.exists(self.sock):
                self.gluster("volume", "stop", self.volume, "force", check=False, timeout=60)
        except Exception as e:
            _log(f"volume stop: {e}")
        t2 = time.monotonic()
        down_leftovers(self.base)
        t3 = time.monotonic()
        self.timings.update(down=t3 - t0, down_unmount=t1 - t0, down_volume=t2 - t1, down_rest=t3 - t2)
        _log(f"down in {t3 - t0:.1f}s (unmount {t1 - t0:.1f}s, volume stop {t2 - t1:.1f}s, "
             f"processes+netns+files {t3 - t2:.1f}s)")

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


def _fuse_abort(mp):
    """Abort the FUSE connection of mount point mp (its client is wedged or frozen):
    every pending and later request then fails with ENOTCONN instead of hanging."""
    conn = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mp:
                conn = fields[2].split(":")[1]    # the fuse connection id is the minor
    if conn is None:
        return
    if not os.path.isdir("/sys/fs/fuse/connections/" + conn):
        _run(["mount", "-t", "fusectl", "none", "/sys/fs/fuse/connections"], check=False)
    try:
        with open(f"/sys/fs/fuse/connections/{conn}/abort", "w") as f:
            f.write("1")
    except OSError:
        pass


def _unmount(mp):
    # --no-canonicalize: umount would otherwise stat the path, which hangs on a FUSE
    # mount whose client is stopped. A mount that still does not go is aborted, then
    # lazily detached.
    try:
        if _run(["umount", "--no-canonicalize", mp], check=False, timeout=15).returncode == 0:
            return
    except subprocess.TimeoutExpired:
        pass
    _fuse_abort(mp)
    _run(["umount", "--no-canonicalize", "-l", mp], check=False, timeout=15)


def down_leftovers(base=BASE_DIR):
    """Remove everything a (possibly crashed) run under base left: mounts, processes,
    namespaces, files. Finds them by base's name and our prefix, not by saved state."""
    base = os.path.abspath(base)
    pids = _pids_naming(base)
    for pid in pids:         # a frozen client would make every step below hang
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    for mp in _mounts_under(base):
        if not mp.startswith(f"{base}/bricks/"):   # tmpfs bricks: after their processes
            _unmount(mp)
    t_kill = time.monotonic()
    left = _pids_naming(base)
    _kill_and_wait(left)
    t_kill = time.monotonic() - t_kill
    if t_kill > 3:
        _log(f"stopping processes {left} took {t_kill:.1f}s")
    for ns in _netns_list():
        if ns.startswith(NS_PREFIX):
            _run(["ip", "netns", "del", ns], check=False)   # takes its veths and bridge along
    keep = os.environ.get("TPDEFS_GLUSTER_KEEP_LOGS")
    if keep and os.path.isdir(f"{base}/log"):
        # For debugging a failed run: glusterd's, the clients' and the bricks' logs.
        dst = os.path.join(keep, time.strftime("%Y%m%d-%H%M%S"))
        shutil.copytree(f"{base}/log", dst, dirs_exist_ok=True)
        bricks = "/var/log/glusterfs/bricks"
        for name in os.listdir(bricks) if os.path.isdir(bricks) else []:
            if name.startswith(base.strip("/").replace("/", "-")):
                shutil.copy(os.path.join(bricks, name), dst)
    snap_file = f"{base}/system-dirs.json"
    if os.path.exists(snap_file):
        with open(snap_file) as f:
            snap = json.load(f)
        for d, before in snap.items():
            if before is None or not os.path.isdir(d):
                continue
            for name in set(os.listdir(d)) - set(before):   # only what this run added
                p = os.path.join(d, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
    if os.path.isdir(base):
        for mp in _mounts_under(base):   # a lazily unmounted fs may linger a moment
            _unmount(mp)
        t_rm = time.monotonic()
        # rm -rf, not shutil.rmtree: a brick holds a .glusterfs gfid tree (a hard link
        # and up to two directories per file), slow to remove file by file from Python.
        _run(["rm", "-rf", "--one-file-system", base], check=False, timeout=600)
        t_rm = time.monotonic() - t_rm
        if t_rm > 3:
            _log(f"removing {base} took {t_rm:.1f}s")


# ----- teardown on exit and on signals -----
_live = []


def _teardown_all():
    while _live:
        _live.pop().down()


def _on_signal(signum, frame):
    _teardown_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _register_teardown(cluster):
    if not _live:
        atexit.register(_teardown_all)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if signal.getsignal(s) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(s, _on_signal)
    _live.append(cluster)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster and leave it running (until `down`)")
    up.add_argument("--clients", type=int, default=2)
    up.add_argument("--bricks", type=int, default=1)
    up.add_argument("--netns", action="store_true", help="each client in its own network namespace")
    up.add_argument("--defaults", action="store_true", help="gluster's default options, not the strict ones")
    up.add_argument("--brick-mib", type=int, help="each brick on a tmpfs of this size")
    sub.add_parser("down", help="tear down a running or crashed cluster")
    sub.add_parser("status", help="print the running cluster's state")
    a = ap.parse_args()
    if a.cmd == "up":
        reason = skip_reason(a.netns)
        if reason:
            print(f"SKIP: {reason}", file=sys.stderr)
            return 77
        gc = GlusterCluster(a.clients, a.bricks, a.netns, strict=not a.defaults, teardown_at_exit=False,
                            brick_mib=a.brick_mib)
        try:
            gc.up()
        except BaseException:
            gc.down()
            raise
        print(json.dumps(gc.info(), indent=1))
    elif a.cmd == "down":
        t0 = time.monotonic()
        # Stop the volume first when glusterd still answers: that ends the bricks cleanly.
        gc = GlusterCluster(base_dir=BASE_DIR, teardown_at_exit=False)
        if os.path.exists(gc.sock):
            gc.gluster("volume", "stop", gc.volume, "force", check=False, timeout=60)
        down_leftovers(BASE_DIR)
        print(f"down in {time.monotonic() - t0:.1f}s")
    else:
        try:
            with open(f"{BASE_DIR}/state.json") as f:
                print(f.read())
        except FileNotFoundError:
            print("no cluster")
        print("mounts:", _mounts_under(BASE_DIR))
        print("processes:", _pids_naming(BASE_DIR))
        print("netns:", [n for n in _netns_list() if n.startswith(NS_PREFIX)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

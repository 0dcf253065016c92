#!/usr/bin/python3
"""tpdefs daemons on several "hosts" sharing one store on GlusterFS.

A GlusterFS volume on local bricks (gluster_cluster.py) is mounted by one glusterfs client
per host; each host runs its own tpdefs daemon (`--node hostN`) over its client's view of
one store, mounted at its own mount point. Every byte is checked (sha256 of every file read
back on every host). Scenarios:

  dcp        ranks on every host write their shards of one step at once (DCP's pattern:
             items as torch.save blobs, fsync); host 0 writes .metadata.tmp, fsyncs, renames
             it over .metadata; every host reads every shard and the metadata
  same_path  two hosts save the same path at once, again and again: one wins, nothing torn
  consistency  close-to-open between hosts (a file rewritten on one host reads new on the
             next open on another, never from stale page cache), how soon a new file is
             listed elsewhere, rename and delete (with rebase) on another host, and tpde ls /
             cat beside the running daemons
  rotation   host 0 saves a trajectory, host 1 keeps the last 3 (deletes the older):
             the store's bytes shrink, what is kept reads back everywhere
  kill       kill -9 of a host's daemon mid-write and mid-compaction, and of its glusterfs
             client: the others keep serving and lose nothing committed; the host mounts
             again; the work left undone is finished; tpde fsck is clean
  next_job   every daemon stops; a "job" of 2 new hosts reads everything back

Usage: cluster_test.py TPDEFS_BIN [RESULTS_DIR] [--only=a,b]. Needs root, /dev/fuse,
glusterfs-server and python3-torch; exits 77 (skip) with the reason otherwise. Writes
"<passed> <failed> <skipped>" to RESULTS_DIR/cluster.count.
"""
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "mount"))
import gluster_cluster as gcl  # noqa: E402
from mount_util import Mount, Results, skip_reason  # noqa: E402

HOSTS = 3


def sha(data):
    return hashlib.sha256(data).hexdigest()


def sha_of(path):
    with open(path, "rb") as f:
        return sha(f.read())


def write_file(path, data, fsync=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def stats(mnt):
    return json.loads(os.getxattr(mnt, "user.tpde.stats"))


def wait_idle(mnt, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stats(mnt)["maintenance_pending"] == 0:
            return True
        time.sleep(0.2)
    return False


def store_bytes(store):
    total = 0
    chains = os.path.join(store, "chains")
    for c in os.listdir(chains):
        objs = os.path.join(chains, c, "objects")
        for o in os.listdir(objs):
            try:
                total += os.stat(os.path.join(objs, o)).st_size
            except FileNotFoundError:
                pass
    return total


class Trajectory:
    """Real checkpoints: a small model trained with AdamW, torch.save of its full state after
    each step (model + optimizer), as bytes."""

    def __init__(self, steps, width=256, seed=0):
        import torch
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(),
                                    torch.nn.Linear(width, width), torch.nn.ReLU(),
                                    torch.nn.Linear(width, 10))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
        self.states, self.models = [], []
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
            self.states.append(buf.getvalue())
            self.models.append({k: v.clone() for k, v in model.state_dict().items()})


def dcp_shards(model_state, nranks):
    """What DCP's FileSystemWriter puts in __R_0.distcp: each rank's row shard of every tensor,
    largest first, each a complete torch.save blob, concatenated."""
    import torch
    out = []
    for rank in range(nranks):
        items = []
        for k, v in model_state.items():
            rows = v.shape[0]
            lo, hi = rows * rank // nranks, rows * (rank + 1) // nranks
            items.append((k, v[lo:hi].clone()))
        items.sort(key=lambda i: -i[1].numel())
        buf = io.BytesIO()
        for _, t in items:
            torch.save(t, buf)
        out.append(buf.getvalue())
    return out


def rank_write(path, data, barrier):
    """A rank process: waits for the others, then writes its shard and fsyncs it."""
    barrier.wait(60)
    write_file(path, data)


class Cluster:
    def __init__(self, tpdefs, res, base):
        self.tpdefs, self.res, self.base = tpdefs, res, base
        self.gc = None
        self.daemons = {}

    def __enter__(self):
        self.gc = gcl.GlusterCluster(clients=HOSTS, bricks=1).up()
        self.store = os.path.join(self.gc.clients[0].mount, "store")
        for i in range(HOSTS):
            self.start(i)
        return self

    def __exit__(self, *exc):
        for node in list(self.daemons):
            m = self.daemons.pop(node)
            m.unmount()
            m.remove_dirs()
        self.gc.down()

    def store_of(self, i):
        return os.path.join(self.gc.clients[i].mount, "store")

    def mnt(self, i, node=None):
        return self.daemons[node or f"host{i}"].mnt

    def start(self, i, node=None):
        node = node or f"host{i}"
        mnt = os.path.join(self.base, node)
        os.makedirs(mnt, exist_ok=True)
        work = tempfile.mkdtemp(dir=self.base)
        m = Mount(os.path.abspath(self.tpdefs), self.store_of(i), mnt,
                  os.path.join(work, "tpdefs.log"), ["--node", node, "--cache-mib", "64"],
                  [work])
        m.start(30)
        self.daemons[node] = m
        return m

    def stop(self, i, node=None):
        m = self.daemons.pop(node or f"host{i}")
        rc = m.unmount()
        m.remove_dirs()
        return rc

    def kill(self, i):
        m = self.daemons.pop(f"host{i}")
        m.kill(signal.SIGKILL)
        m.unmount()
        m.remove_dirs()

    def fsck(self, i=0):
        tpde = os.path.join(os.path.dirname(os.path.abspath(self.tpdefs)), "tpde")
        r = subprocess.run([tpde, "fsck", self.store_of(i)], capture_output=True, text=True,
                           timeout=300)
        return r.returncode, (r.stdout + r.stderr).strip()

    def read_everywhere(self, expected, hosts=None):
        """{path: sha} read on every host; returns the list of (host, path) that differ."""
        bad = []
        for node, m in self.daemons.items():
            if hosts and node not in hosts:
                continue
            for p, digest in expected.items():
                try:
                    got = sha_of(os.path.join(m.mnt, p))
                except OSError as e:
                    got = f"error {e}"
                if got != digest:
                    bad.append((node, p, got[:12]))
        return bad


def s_dcp(c, res, traj, expected):
    nranks = HOSTS * 2
    ctx = mp.get_context("fork")
    for step in (1, 2):
        shards = dcp_shards(traj.models[step], nranks)
        ck = f"dcp/step_{step}"
        barrier = ctx.Barrier(nranks)
        procs = []
        for rank in range(nranks):
            host = rank % HOSTS
            path = os.path.join(c.mnt(host), ck, f"__{rank}_0.distcp")
            procs.append(ctx.Process(target=rank_write, args=(path, shards[rank], barrier)))
        os.makedirs(os.path.join(c.mnt(0), ck), exist_ok=True)
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        res.check(f"dcp_step{step}_ranks_wrote", all(p.exitcode == 0 for p in procs),
                  str([p.exitcode for p in procs]))
        meta = json.dumps({"step": step, "files": [sha(s) for s in shards]}).encode()
        tmp = os.path.join(c.mnt(0), ck, ".metadata.tmp")
        write_file(tmp, meta)
        if os.path.exists(os.path.join(c.mnt(0), ck, ".metadata")):
            os.unlink(os.path.join(c.mnt(0), ck, ".metadata"))
        os.rename(tmp, os.path.join(c.mnt(0), ck, ".metadata"))
        for rank in range(nranks):
            expected[f"{ck}/__{rank}_0.distcp"] = sha(shards[rank])
        expected[f"{ck}/.metadata"] = sha(meta)
        # Close-to-open: right after the last close, every host reads every byte.
        bad = c.read_everywhere({k: v for k, v in expected.items() if k.startswith(ck)})
        res.check(f"dcp_step{step}_every_host_reads_every_shard", not bad, str(bad[:3]))
        listed = sorted(os.listdir(os.path.join(c.mnt(HOSTS - 1), ck)))
        res.check(f"dcp_step{step}_listing_on_another_host",
                  listed == sorted([".metadata"] + [f"__{r}_0.distcp" for r in range(nranks)]),
                  str(listed))


def s_same_path(c, res, traj, expected):
    a, b = traj.states[3], traj.states[4]
    errors = []

    def save(host, data):
        try:
            write_file(os.path.join(c.mnt(host), "shared", "last.ckpt"), data)
        except OSError as e:
            errors.append(f"host{host}: {e}")

    os.makedirs(os.path.join(c.mnt(0), "shared"), exist_ok=True)
    torn = 0
    for _ in range(8):
        t = [threading.Thread(target=save, args=(0, a)), threading.Thread(target=save, args=(1, b))]
        for x in t:
            x.start()
        for x in t:
            x.join()
        got = {sha_of(os.path.join(c.mnt(h), "shared", "last.ckpt")) for h in range(HOSTS)}
        if len(got) != 1 or not got <= {sha(a), sha(b)}:
            torn += 1
    res.check("same_path_one_wins_nothing_torn", torn == 0 and not errors,
              f"torn {torn}, errors {errors[:2]}")
    expected["shared/last.ckpt"] = sha_of(os.path.join(c.mnt(0), "shared", "last.ckpt"))


def s_consistency(c, res, traj, expected):
    d0, d1 = os.path.join(c.mnt(0), "cto"), os.path.join(c.mnt(1), "cto")
    os.makedirs(d0, exist_ok=True)
    # A new file on host 0 shows on host 1 within the documented delay (--attr-timeout, 1 s).
    t = time.monotonic()
    write_file(os.path.join(d0, "new.pt"), traj.states[0])
    while not os.path.exists(os.path.join(d1, "new.pt")) and time.monotonic() - t < 5:
        time.sleep(0.02)
    seen = time.monotonic() - t
    res.check("consistency_new_file_listed_on_another_host_within_2s", seen < 2.0,
              f"{seen:.2f} s")
    # Host 1 reads a file (its kernel caches the pages), host 0 replaces it in place with
    # other bytes of the same size: host 1's next open reads exactly the new bytes.
    a, b = traj.states[1], traj.states[2]
    assert len(a) == len(b)
    stale = 0
    for r in range(5):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        write_file(os.path.join(d0, "replaced.pt"), first)
        ok1 = sha_of(os.path.join(d1, "replaced.pt")) == sha(first)
        with open(os.path.join(d0, "replaced.pt"), "r+b") as f:  # rewritten in place
            f.write(second)
            f.truncate(len(second))
        ok2 = sha_of(os.path.join(d1, "replaced.pt")) == sha(second)
        stale += (not ok1) + (not ok2)
    res.check("consistency_close_to_open_no_stale_page_cache", stale == 0, f"{stale} stale reads")
    # Rename and delete on host 2 of files host 0 wrote, including a version others are
    # encoded against (rebased, not lost).
    for step in range(4):
        write_file(os.path.join(d0, f"chain-{step}.pt"), traj.states[step])
    wait_idle(c.mnt(0))
    d2 = os.path.join(c.mnt(2), "cto")
    os.rename(os.path.join(d2, "chain-3.pt"), os.path.join(d2, "renamed-3.pt"))
    os.unlink(os.path.join(d2, "chain-2.pt"))  # the base of chain-1
    wait_idle(c.mnt(2))
    keep = {"cto/chain-0.pt": sha(traj.states[0]), "cto/chain-1.pt": sha(traj.states[1]),
            "cto/renamed-3.pt": sha(traj.states[3]), "cto/new.pt": sha(traj.states[0]),
            "cto/replaced.pt": sha(a if 4 % 2 else b)}
    bad = c.read_everywhere(keep)
    res.check("consistency_rename_and_delete_on_another_host", not bad and
              not os.path.exists(os.path.join(d0, "chain-2.pt")), str(bad[:3]))
    expected.update(keep)
    # The command-line readers work on a store that daemons have mounted, from any host.
    tpde = os.path.join(os.path.dirname(os.path.abspath(c.tpdefs)), "tpde")
    ls = subprocess.run([tpde, "ls", c.store_of(2), "cto"], capture_output=True, text=True,
                        timeout=60)
    cat = subprocess.run([tpde, "cat", c.store_of(1), "cto/chain-1.pt"], capture_output=True,
                         timeout=60)
    res.check("consistency_tpde_ls_and_cat_beside_running_daemons",
              ls.returncode == 0 and "renamed-3.pt" in ls.stdout and cat.returncode == 0 and
              sha(cat.stdout) == sha(traj.states[1]), (ls.stderr + cat.stderr.decode())[-300:])


def s_rotation(c, res, traj, expected):
    keep, sizes = 3, []
    before = store_bytes(c.store)
    for step, data in enumerate(traj.states[:8]):
        write_file(os.path.join(c.mnt(0), "rot", f"checkpoint-{step}", "state.pt"), data)
        # The rotation runs on another host, as a job's rank 0 may not be where it saves.
        old = step - keep
        if old >= 0:
            shutil.rmtree(os.path.join(c.mnt(1), "rot", f"checkpoint-{old}"))
        wait_idle(c.mnt(0))
        wait_idle(c.mnt(1))
        sizes.append(store_bytes(c.store) - before)
    kept = {f"rot/checkpoint-{s}/state.pt": sha(traj.states[s]) for s in range(5, 8)}
    bad = c.read_everywhere(kept)
    res.check("rotation_kept_checkpoints_read_back_everywhere", not bad, str(bad[:3]))
    listed = sorted(os.listdir(os.path.join(c.mnt(2), "rot")))
    res.check("rotation_deleted_checkpoints_are_gone_everywhere",
              listed == [f"checkpoint-{s}" for s in range(5, 8)], str(listed))
    # Deleting frees space on whichever host deletes: the rotation's bytes stop growing once
    # old checkpoints go, and stay below 3 uncompressed checkpoints.
    one = len(traj.states[0])
    res.check("rotation_store_bytes_shrink_and_stay_bounded",
              sizes[-1] < max(sizes) and sizes[-1] < 3 * one,
              f"bytes after each save {sizes}, one checkpoint {one}")
    expected.update(kept)


def s_kill(c, res, traj, expected):
    big = os.urandom(16 << 20)
    # Mid-write: host 1's daemon dies while a file is half written.
    path1 = os.path.join(c.mnt(1), "kill", "half.bin")
    os.makedirs(os.path.dirname(path1), exist_ok=True)
    f = open(path1, "wb")
    f.write(big[: 8 << 20])
    c.kill(1)
    try:
        f.close()
    except OSError:
        pass
    bad = c.read_everywhere(expected, hosts={"host0", "host2"})
    res.check("kill_daemon_mid_write_others_keep_serving", not bad, str(bad[:3]))
    # Mid-compaction: a commit, then its daemon dies while maintenance runs.
    c.start(1)
    write_file(os.path.join(c.mnt(1), "kill", "step-1.pt"), traj.states[5])
    write_file(os.path.join(c.mnt(1), "kill", "step-2.pt"), traj.states[6])
    busy = stats(c.mnt(1))["maintenance_pending"]
    c.kill(1)
    expected["kill/step-1.pt"] = sha(traj.states[5])
    expected["kill/step-2.pt"] = sha(traj.states[6])
    bad = c.read_everywhere(expected, hosts={"host0", "host2"})
    res.check("kill_daemon_mid_compaction_nothing_committed_lost", not bad,
              f"maintenance pending at the kill: {busy}; {bad[:3]}")
    res.check("kill_half_written_file_not_visible",
              not os.path.exists(os.path.join(c.mnt(0), "kill", "half.bin")) or
              os.path.getsize(os.path.join(c.mnt(0), "kill", "half.bin")) == 0)
    # The host comes back: its recovery finishes the compaction it left.
    c.start(1)
    wait_idle(c.mnt(1))
    parent = os.getxattr(os.path.join(c.mnt(0), "kill", "step-1.pt"), "user.tpde.parent")
    res.check("kill_restarted_host_finishes_the_compaction", parent == b"kill/step-2.pt",
              parent.decode())
    # The host's glusterfs client dies: its daemon's store is gone under it; the others go on.
    write_file(os.path.join(c.mnt(2), "kill", "before-client-kill.pt"), traj.states[7])
    expected["kill/before-client-kill.pt"] = sha(traj.states[7])
    c.gc.kill_client(1)
    bad = c.read_everywhere(expected, hosts={"host0", "host2"})
    res.check("kill_client_others_keep_serving", not bad, str(bad[:3]))
    c.kill(1)
    c.gc.remount(1)
    c.start(1)
    bad = c.read_everywhere(expected)
    res.check("kill_client_host_mounts_again_and_reads_everything", not bad, str(bad[:3]))
    for h in range(HOSTS):
        wait_idle(c.mnt(h))
    rc, out = c.fsck()
    res.check("kill_fsck_clean_with_daemons_running", rc == 0, out[-400:])


def s_next_job(c, res, traj, expected):
    for i in range(HOSTS):
        c.stop(i)
    rc, out = c.fsck()
    res.check("next_job_fsck_clean_after_every_daemon_stopped", rc == 0, out[-400:])
    for node, host in (("job2-a", 0), ("job2-b", 2)):
        c.start(host, node=node)
    bad = c.read_everywhere(expected)
    res.check("next_job_two_hosts_read_every_file_back", not bad and len(expected) > 20,
              f"{len(expected)} files, {bad[:3]}")
    for node, host in (("job2-a", 0), ("job2-b", 2)):
        c.stop(host, node=node)


SCENARIOS = [("dcp", s_dcp), ("same_path", s_same_path), ("consistency", s_consistency),
             ("rotation", s_rotation),
             ("kill", s_kill), ("next_job", s_next_job)]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only = [a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--only=")]
    tpdefs = args[0]
    res = Results("cluster", args[1] if len(args) > 1 else None)
    why = skip_reason() or gcl.skip_reason()
    if why:
        res.skip(why)
    try:
        import torch  # noqa: F401
    except ImportError:
        res.skip("python3-torch is not installed")
    t0 = time.monotonic()
    traj = Trajectory(8)
    expected = {}
    base = tempfile.mkdtemp(prefix="tpdefs-cluster-")
    try:
        with Cluster(tpdefs, res, base) as c:
            res.check("cluster_up", True, f"{c.gc.timings['up']:.1f} s")
            for name, fn in SCENARIOS:
                if only and name not in only[0]:
                    continue
                t = time.monotonic()
                try:
                    fn(c, res, traj, expected)
                except Exception as e:  # a scenario that raised is a failure, not a crash
                    res.check(f"{name}_ran", False, repr(e))
                print(f"-- {name}: {time.monotonic() - t:.1f} s", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"cluster suite: {time.monotonic() - t0:.0f} s", flush=True)
    res.finish()


if __name__ == "__main__":
    main()

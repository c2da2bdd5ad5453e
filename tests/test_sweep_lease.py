"""The lease protocol: one holder at a time, heartbeat, takeover of dead or silent holders, safe release."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from sweeps.lease import LEASE, Lease, is_stale


def _race(run_dir, barrier, wins):
    barrier.wait()
    lease = Lease.acquire(run_dir, f"racer-{os.getpid()}", ttl=30)
    if lease is not None:
        wins.put(os.getpid())
        time.sleep(0.5)  # hold it while the others try
        lease.release()


def test_exactly_one_of_many_racing_processes_wins(tmp_path):
    ctx = mp.get_context("spawn")  # no fork of a process that may run JAX threads
    barrier, wins = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, barrier, wins)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    winners = []
    while not wins.empty():
        winners.append(wins.get())
    assert len(winners) == 1
    assert not (tmp_path / LEASE).exists()  # released by its holder


def test_held_lease_is_refused_and_heartbeat_keeps_it_fresh(tmp_path):
    a = Lease.acquire(tmp_path, "a", ttl=0.4)
    assert a is not None and json.loads((tmp_path / LEASE).read_text())["owner"] == "a"
    time.sleep(1.0)  # > ttl: only the heartbeat keeps it alive
    assert not is_stale(tmp_path / LEASE)
    assert Lease.acquire(tmp_path, "b", ttl=0.4) is None
    a.release()
    b = Lease.acquire(tmp_path, "b", ttl=0.4)
    assert b is not None and b.previous is None
    b.release()


def test_silent_holder_is_taken_over_and_learns_it_lost(tmp_path):
    a = Lease.acquire(tmp_path, "a", ttl=0.4)
    a._stop.set()  # simulate a stalled worker: no more heartbeats
    a._thread.join()
    time.sleep(0.6)
    assert is_stale(tmp_path / LEASE)
    b = Lease.acquire(tmp_path, "b", ttl=0.4)
    assert b is not None and b.previous["owner"] == "a"
    assert not a.still_mine()
    a.release()  # must not remove b's lease
    assert json.loads((tmp_path / LEASE).read_text())["owner"] == "b"
    # a's heartbeat, were it to resume, would notice the loss
    a._stop.clear()
    a._start()
    time.sleep(0.3)
    assert a.lost
    b.release()


def test_lease_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    code = ("import sys, os; from sweeps.lease import Lease; "
            "Lease.acquire(sys.argv[1], 'dead', ttl=3600); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / LEASE).exists() and is_stale(tmp_path / LEASE)
    b = Lease.acquire(tmp_path, "b", ttl=60)
    assert b is not None and b.previous["owner"] == "dead"
    b.release()

"""Reliability with real worker processes: kill -9 at random moments, concurrent workers, SIGTERM.

Workers are single-threaded (pinned to one core), so results are bit-identical across processes on CPU;
they share one persistent compilation cache, so a restarted worker does not recompile."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import build_tables
from sweeps.experiment import expand, load_experiment
from sweeps.progress import last_row
from sweeps.store import Store
from sweep_fixtures import shared_jax_cache, write_experiment
from sweeps.worker import EXIT_DONE, EXIT_REQUEUE

ROOT = Path(__file__).resolve().parents[1]
LRS = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]
SEEDS = [0, 1]
BASE = {"run.steps": 72, "run.checkpoint_every": 6}  # long enough that three workers overlap (a run with a warm cache: ~0.3 s per 24 steps)
VOLATILE = ("wall_time_s",)


def _store(tmp: Path, name: str = "chaos") -> tuple[Store, list[str]]:
    exp = load_experiment(write_experiment(tmp / f"{name}.py", LRS, SEEDS, base=BASE))
    store = Store(tmp / "store")
    return store, store.register(exp, expand(exp))


def _start_worker(store: Store, cache: Path, cpu: int, name: str = "chaos", log: Path | None = None):
    cmd = [sys.executable, "-m", "sweeps.worker", "--store", str(store.root), "--experiment", name,
           "--cpus", str(cpu % len(os.sched_getaffinity(0))), "--jax-cache", str(cache), "--lease-ttl", "10",
           "--poll", "0.2"]
    out = open(log or os.devnull, "a")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _tables(store: Store):
    runs, curves = build_tables(store.root)
    runs = runs.drop(columns=[c for c in runs.columns if c.startswith(("status.", "_")) or c in VOLATILE])
    return runs.sort_values("run_id").reset_index(drop=True), curves.sort_values(["run_id", "step"]).reset_index(
        drop=True)


def _check_no_concurrent_training(store: Store, run_id: str) -> None:
    """A second worker may start a run only after the first finished, or after taking its lease over.

    A takeover names the worker that trained the run, or, when none was training, one that was killed
    while it held the lease without training (between acquiring it and logging a start, while verifying a
    finished run, or after letting the run go but before releasing the lease: every takeover is logged)."""
    active = None
    for e in store.events(run_id):
        if e["event"] == "takeover":
            if active is not None:
                assert e["previous"] == active, (run_id, e)
            active = None
        elif e["event"] == "start":
            assert active is None, f"{run_id}: {e['worker']} started while {active} held it"
            active = e["worker"]
        elif e["event"] in ("finish", "preempted", "failed", "blocked"):
            assert e["worker"] == active, (run_id, e)
            active = None


def _wait_until_training_past_a_checkpoint(store: Store, ids: list[str], timeout: float = 120) -> bool:
    """Kill moments are random, but only once some run is mid-training beyond its first checkpoint
    (a loaded machine can spend seconds starting a worker). False if none was by the timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for run_id in ids:
            if store.status(run_id)["state"] == "running":
                row = last_row(store.run_dir(run_id) / "metrics.jsonl") or {}
                if row.get("step", 0) > BASE["run.checkpoint_every"]:
                    return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def cache():
    return shared_jax_cache()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    """The reference sweep: three workers on one store, none interrupted. With the compilation cache warm a
    run takes well under a second, so on a loaded machine the first worker up can finish the sweep before
    the others have imported JAX; the sweep is then replayed on a fresh store (at most three tries), so the
    concurrency the tests below check really happened."""
    for attempt in range(3):
        store, ids = _store(tmp_path_factory.mktemp("uninterrupted"))
        workers = [_start_worker(store, cache, i) for i in range(3)]
        assert [w.wait(timeout=600) for w in workers] == [EXIT_DONE] * 3
        if len({e["worker"] for r in ids for e in store.events(r)}) >= 2:
            break
    return store, ids, _tables(store)


def test_three_concurrent_workers_never_train_a_run_twice(uninterrupted):
    store, ids, (runs, _) = uninterrupted
    for run_id in ids:
        events = [e["event"] for e in store.events(run_id)]
        assert events == ["start", "finish"], (run_id, events)
    owners = {e["worker"] for r in ids for e in store.events(r)}
    assert len(owners) >= 2  # the work was shared
    assert list(runs["run_id"]) == sorted(ids) and set(runs["state"]) == {"done"}


def _kill_at_random_moments(root, cache, rng: random.Random) -> tuple[Store, list[str], int, int]:
    """Two workers on a fresh store, killed with SIGKILL at random moments mid-training and restarted:
    at least 5 rounds, and on until 3 kills have landed (at most 12 rounds). Returns (store, ids, kills,
    rounds) once both workers finished."""
    store, ids = _store(root)
    workers = [_start_worker(store, cache, i, log=root / f"w{i}.log") for i in range(2)]
    kills, rounds = 0, 0
    while (rounds < 5 or kills < 3) and rounds < 12:
        rounds += 1
        if not _wait_until_training_past_a_checkpoint(store, ids, timeout=30 if kills >= 3 else 120):
            break
        time.sleep(rng.uniform(0.0, 1.0))
        alive = [i for i in range(2) if workers[i].poll() is None]
        victims = [i for i in alive if rng.random() < 0.7] or alive[:1]
        for i in victims:
            if workers[i].poll() is None:
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait()
                kills += 1
            workers[i] = _start_worker(store, cache, i, log=root / f"w{i}.log")
    codes = [w.wait(timeout=600) for w in workers]
    assert codes == [EXIT_DONE, EXIT_DONE], [(root / f"w{i}.log").read_text()[-2000:] for i in range(2)]
    return store, ids, kills, rounds


def test_kill_9_at_random_moments_gives_the_uninterrupted_results(tmp_path, cache, uninterrupted):
    rng = random.Random(1234)
    # A fast sweep can finish before three kills land; then the scenario is replayed on a fresh store
    # (every attempt must still end complete and exact, checked below for the one that counted).
    for attempt in range(3):
        root = tmp_path / f"attempt{attempt}"
        root.mkdir()
        store, ids, kills, rounds = _kill_at_random_moments(root, cache, rng)
        if kills >= 3:
            break
    assert kills >= 3, f"three attempts ended with fewer than 3 kills landed ({kills} in the last)"
    print(f"chaos: {len(ids)} runs, {kills} kill -9 in {rounds} rounds (attempt {attempt + 1})")
    runs, curves = _tables(store)
    assert list(runs["run_id"]) == sorted(ids) and runs["run_id"].is_unique  # every run exactly once
    assert set(runs["state"]) == {"done"}
    ref_runs, ref_curves = uninterrupted[2]
    pd.testing.assert_frame_equal(runs[ref_runs.columns], ref_runs, check_exact=True)
    pd.testing.assert_frame_equal(curves[ref_curves.columns], ref_curves, check_exact=True)
    starts = [e for r in ids for e in store.events(r) if e["event"] == "start"]
    assert any(e["from_step"] > 0 for e in starts), "no run was ever resumed from a checkpoint"
    for run_id in ids:
        _check_no_concurrent_training(store, run_id)


def test_sigterm_checkpoints_and_exits_for_requeue(tmp_path, cache):
    exp = load_experiment(write_experiment(tmp_path / "long.py", [1e-3], [0], base={"run.steps": 4000,
                                                                                    "run.checkpoint_every": 1000}))
    store = Store(tmp_path / "store")
    (run_id,) = store.register(exp, expand(exp))
    worker = _start_worker(store, cache, 0, name="long")
    metrics = store.run_dir(run_id) / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 20):
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == EXIT_REQUEUE
    status = store.status(run_id)
    assert status["state"] == "pending" and 0 < status["preempted_at"] < 4000
    assert store.inspect(run_id).checkpoints[-1] == status["preempted_at"]  # checkpointed where it stopped
    assert not (store.run_dir(run_id) / "lease").exists()
    events = [e["event"] for e in store.events(run_id)]
    assert events == ["start", "preempted"]
    json.loads((store.run_dir(run_id) / "status").read_text())  # a complete JSON record

"""Executors end to end: local processes through the CLI, a SLURM array through submitit's local executor
(preempted and requeued), and Ray workers on a local Ray instance.

submitit and Ray are optional extras of the package, but these tests are not skipped without them: they
fail, saying what to install."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweeps.experiment import expand, load_experiment
from sweeps.progress import last_row
from sweeps.store import Store
from sweep_fixtures import shared_jax_cache, write_experiment
from sweeps.worker import EXIT_DONE, WorkerOptions

ROOT = Path(__file__).resolve().parents[1]
LRS = [1e-3, 2e-3, 4e-3, 8e-3]


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: pip install 'scaling[{extra}]' to test the {extra} executor")


def _register(tmp_path: Path, name: str, base: dict | None = None):
    exp = load_experiment(write_experiment(tmp_path / f"{name}.py", LRS, [0], base=base))
    store = Store(tmp_path / "store")
    return store, store.register(exp, expand(exp))


def test_local_executor_from_the_command_line(tmp_path):
    path = write_experiment(tmp_path / "cli.py", LRS, [0])
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "scaling_cli", "sweep", "run", str(path), "--store", str(store), "--workers", "2",
           "--lease-ttl", "10"]
    env = {**os.environ, "SCALING_SWEEP_JAX_CACHE": str(shared_jax_cache())}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "done 4" in proc.stdout and "runs.parquet (4 runs)" in proc.stdout
    st = Store(store)
    ids = st.manifest("cli")["runs"]
    workers = {e["worker"] for r in ids for e in st.events(r)}
    assert len(workers) == 2  # both processes took runs
    assert len(pd.read_parquet(store / "runs.parquet")) == 4
    logs = sorted(p.name for p in (store / "_logs").iterdir())
    assert logs == ["cli-worker0.log", "cli-worker1.log"]
    status = subprocess.run([sys.executable, "-m", "scaling_cli", "sweep", "status", "--store", str(store)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "best 4 of 4" in status.stdout


def test_slurm_array_via_submitit_requeues_a_preempted_task(tmp_path):
    _require("submitit", "slurm")
    from sweeps.executors.slurm import submit

    store, ids = _register(tmp_path, "array", base={"run.steps": 150, "run.checkpoint_every": 25})
    options = WorkerOptions(poll_s=0.2, lease_ttl=10, jax_cache=str(shared_jax_cache()))
    jobs = submit(store.root, "array", 2, options, {"timeout_min": 10}, cluster="local")
    assert len(jobs) == 2
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:  # preempt a task in the middle of a run
        for run_id in ids:
            status = store.status(run_id)
            row = last_row(store.run_dir(run_id) / "metrics.jsonl") or {}
            if status["state"] == "running" and row.get("step", 0) > 30:
                victim = run_id, status["pid"]
                break
        time.sleep(0.1)
    assert victim is not None, "no run got going"
    os.kill(victim[1], signal.SIGUSR2)  # what SLURM sends (through submitit) on preemption or timeout
    for job in jobs:
        job.wait()
    assert [job.result() for job in jobs] == [EXIT_DONE, EXIT_DONE]
    assert [store.status(r)["state"] for r in ids] == ["done"] * 4
    events = store.events(victim[0])
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "preempted", "start", "finish"], kinds
    assert events[2]["from_step"] == events[1]["steps"] > 30  # resumed from the preemption checkpoint
    logs = "".join(job.stderr() or "" for job in jobs)
    assert "Requeued job" in logs


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # ray.init forks and execs its daemons
def test_ray_workers_on_a_local_ray_instance(tmp_path):
    ray = _require("ray", "ray")
    from sweeps.executors.ray import run_ray

    store, ids = _register(tmp_path, "rayexp")
    options = WorkerOptions(poll_s=0.2, lease_ttl=10, jax_cache=str(shared_jax_cache()))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert run_ray(store.root, "rayexp", 2, options, progress=False) == EXIT_DONE
    finally:
        ray.shutdown()
    assert [store.status(r)["state"] for r in ids] == ["done"] * 4
    for run_id in ids:
        assert [e["event"] for e in store.events(run_id)] == ["start", "finish"]
        assert json.loads((store.run_dir(run_id) / "summary.json").read_text())["status"] == "done"

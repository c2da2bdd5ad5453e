"""Local executor: N worker processes on this machine, each pinned to its own device.

- Accelerators (NVIDIA GPUs, found with nvidia-smi without starting JAX here): worker i sees GPU
  i mod G through CUDA_VISIBLE_DEVICES; the default is one worker per GPU.
- CPU: the default is one single-threaded worker per core. Measured on a 2-core machine with small
  models, two pinned single-threaded workers give more throughput than one worker using both cores
  (benchmarks/README.md, "Sweeps"). Each worker is pinned with sched_setaffinity before JAX starts:
  XLA's CPU client sizes its thread pool from the affinity mask. (XLA_FLAGS
  "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" is accepted by jax 0.10.2 but
  does not reduce the threads doing work; see the benchmark.)
Workers log to <store>/_logs/. SIGINT/SIGTERM to this process is forwarded as SIGTERM to the workers,
which checkpoint and exit with EXIT_REQUEUE; a worker that crashes (any exit status but 0, 1 and 75) is
restarted (its run is taken over at once, since its process is gone). The exit status is the store's
final state (sweeps.worker.sweep_outcome), printed with its counts, not the workers' exit codes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.progress import Display, snapshot
from sweeps.store import Store
from sweeps.worker import EXIT_DONE, EXIT_FAILED, EXIT_REQUEUE, WorkerOptions, sweep_outcome

MAX_RESTARTS = 3


def detect_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def plan_workers(workers: int | None) -> list[dict]:
    """One {"env": ..., "cpus": ...} per worker."""
    gpus = detect_gpus()
    if gpus:
        n = workers or len(gpus)
        plans = []
        for i in range(n):
            env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
            if n > len(gpus):  # several workers share a GPU: no preallocation of its memory
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
            plans.append({"env": env, "cpus": None})
        return plans
    cpus = available_cpus()
    n = workers or len(cpus)
    if n <= len(cpus):  # contiguous blocks of cores, one block per worker
        per = len(cpus) // n
        blocks = [cpus[i * per:(i + 1) * per] for i in range(n)]
    else:  # more workers than cores: one core each, round robin
        blocks = [[cpus[i % len(cpus)]] for i in range(n)]
    return [{"env": {}, "cpus": b} for b in blocks]


def worker_command(store: Path, experiment: str, options: WorkerOptions, cpus: list[int] | None) -> list[str]:
    cmd = [sys.executable, "-m", "sweeps.worker", "--store", str(store), "--experiment", experiment,
           "--max-attempts", str(options.max_attempts), "--lease-ttl", str(options.lease_ttl),
           "--poll", str(options.poll_s), "--batch", options.batch, "--max-batch", str(options.max_batch),
           "--jax-cache", options.jax_cache or "none"]
    return cmd + (["--cpus", ",".join(map(str, cpus))] if cpus else [])


def run_local(store: str | Path, experiment: str, workers: int | None = None,
              options: WorkerOptions = WorkerOptions(), progress: bool = True, refresh_s: float = 1.0) -> int:
    store = Store(store)
    run_ids = store.manifest(experiment)["runs"]
    plans = plan_workers(workers)
    logs = store.root / "_logs"
    logs.mkdir(parents=True, exist_ok=True)
    project_root = str(Path(__file__).resolve().parents[2])

    def start(i: int) -> subprocess.Popen:
        env = {**os.environ, **plans[i]["env"],
               "PYTHONPATH": os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")]))}
        with open(logs / f"{experiment}-worker{i}.log", "a") as log:  # the child keeps its own descriptor
            return subprocess.Popen(worker_command(store.root, experiment, options, plans[i]["cpus"]), env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=project_root)

    procs = [start(i) for i in range(len(plans))]
    restarts = [0] * len(procs)
    codes: list[int | None] = [None] * len(procs)
    stopping = {"flag": False}

    def forward(signum, frame):  # noqa: ARG001
        stopping["flag"] = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    display = Display(f"sweep {experiment} ({len(procs)} workers)", enabled=progress)
    try:
        while any(c is None for c in codes):
            for i, p in enumerate(procs):
                if codes[i] is not None or p.poll() is None:
                    continue
                rc = p.returncode
                crashed = rc not in (EXIT_DONE, EXIT_FAILED, EXIT_REQUEUE)
                if crashed and not stopping["flag"] and restarts[i] < MAX_RESTARTS:
                    restarts[i] += 1
                    print(f"worker {i} exited with {rc} (log: {logs / f'{experiment}-worker{i}.log'}); "
                          f"restart {restarts[i]}/{MAX_RESTARTS}", file=sys.stderr, flush=True)
                    procs[i] = start(i)
                else:
                    codes[i] = rc
            display.update(snapshot(store, run_ids))
            time.sleep(refresh_s)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        display.close(snapshot(store, run_ids))
    for i, rc in enumerate(codes):
        if rc != EXIT_DONE:
            print(f"worker {i} exited with {rc} (log: {logs / f'{experiment}-worker{i}.log'})", file=sys.stderr,
                  flush=True)
    code, line = sweep_outcome(store, run_ids, options.max_attempts)
    print(f"sweep {experiment}: {line}", flush=True)
    return code

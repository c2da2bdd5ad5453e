"""Compilation: time of our train step vs depth (unrolled blocks, `model.scan_layers`, `model.remat`), and
what the persistent compilation cache saves a second process.

    .venv/bin/python -m benchmarks.compile_bench depth [--depths 1 2 4 8] [--set model.width=64 ...]
    .venv/bin/python -m benchmarks.compile_bench cache [--set ...]

`depth` lowers and compiles `Program.step` (K = 1) for each depth and layout in one process and reports the
trace/lower and XLA compile seconds separately. `cache` runs three fresh processes that each compile the
same step: without a cache, with an empty cache directory, and again with the now filled one; the cache is
enabled as a sweep worker enables it (sweeps.worker.configure_process), and cache hits are counted from
JAX's monitoring events.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.width=64", "model.depth=2", "model.n_heads=2", "model.context=64", "model.mlp=gelu",
         "run.batch_size=8", "data.source=synthetic", "optim.name=adamw"]


def compile_step(overrides: list[str]) -> dict:
    """Seconds to trace + lower and to compile our jitted train step for one config (a fresh Program)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.config import load_config
    from scaling.hyper import program_config
    from scaling.program import Program

    cfg = load_config(overrides=overrides)
    program = Program(program_config(cfg))
    state = jax.eval_shape(lambda: program.init_state(jax.random.PRNGKey(0), cfg))
    tokens = np.zeros((cfg.run.batch_size, cfg.model.context + 1), np.int32)
    hp = program.hyper_values(cfg)
    t0 = time.perf_counter()
    lowered = program.compiled().step.lower(state, tokens, jnp.int32(0), False, hp)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}


LAYOUTS = {"unrolled": [], "scan": ["model.scan_layers=true"], "unrolled+remat": ["model.remat=true"],
           "scan+remat": ["model.scan_layers=true", "model.remat=true"]}


def depth_sweep(base: list[str], depths: list[int], layouts: list[str] = ("unrolled", "scan")) -> list[dict]:
    """One row per (layout, depth). Compile time of the unrolled step grows with depth; the scanned one's
    should stay nearly flat (one block is compiled whatever the depth)."""
    rows = []
    for layout in layouts:
        for depth in depths:
            t = compile_step(base + [f"model.depth={depth}"] + LAYOUTS[layout])
            rows.append({"layout": layout, "depth": depth, **t})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def growth(rows: list[dict], layout: str) -> float:
    """total compile time at the deepest depth / at the shallowest, for one layout."""
    r = sorted((x for x in rows if x["layout"] == layout), key=lambda x: x["depth"])
    return round(r[-1]["total_s"] / r[0]["total_s"], 2)


# ---------------------------------------------------------------- persistent cache (fresh processes)

CACHE_SNIPPET = r"""
import json, os, sys
if os.environ.get("BENCH_CPU"):
    os.sched_setaffinity(0, {int(os.environ["BENCH_CPU"])})
cache, overrides = sys.argv[1], json.loads(sys.argv[2])
from sweeps.worker import configure_process
configure_process(None, cache or None)
import jax.monitoring
events = {}
jax.monitoring.register_event_listener(lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1))
from benchmarks.compile_bench import compile_step
row = compile_step(overrides)
row["cache_hits"] = events.get("/jax/compilation_cache/cache_hits", 0)
row["cache_misses"] = events.get("/jax/compilation_cache/cache_misses", 0)
print(json.dumps(row))
"""


def compile_in_process(overrides: list[str], cache: str | None, cpu: int | None = None,
                       timeout: float = 600) -> dict:
    """Compile our step in a fresh process, with the persistent cache at `cache` (None: off)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if cpu is not None:
        env["BENCH_CPU"] = str(cpu)
    out = subprocess.run([sys.executable, "-c", CACHE_SNIPPET, cache or "", json.dumps(overrides)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.splitlines()[-1])


def cache_effect(overrides: list[str], cpu: int | None = None) -> dict:
    """Compile time of a second process: no cache vs an empty cache (first process) vs the filled cache."""
    with tempfile.TemporaryDirectory() as tmp:
        off = compile_in_process(overrides, None, cpu)
        cold = compile_in_process(overrides, tmp, cpu)
        entries = sum(1 for _ in Path(tmp).rglob("*") if _.is_file())
        warm = compile_in_process(overrides, tmp, cpu)
    return {"no_cache": off, "cache_cold": cold, "cache_warm": warm, "cache_entries": entries,
            "warm_over_no_cache": round(warm["total_s"] / off["total_s"], 3),
            "compile_warm_over_no_cache": round(warm["compile_s"] / max(off["compile_s"], 1e-9), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["depth", "cache"])
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    if args.part == "depth":
        rows = depth_sweep(SMALL + args.set, args.depths, args.layouts)
        print(json.dumps({layout: growth(rows, layout) for layout in args.layouts}))
    else:
        print(json.dumps(cache_effect(SMALL + args.set)))


if __name__ == "__main__":
    main()

"""Benchmark: batched Chinchilla Approach 3 fit vs a scipy L-BFGS-B loop over the same 4,500 starts.

Both minimise the same objective (Huber sum on log residuals, delta = 1e-3, scaled by 1/delta) on
the 240 reference points (analysis.datasets.chinchilla_points) from Epoch's 4,500-start grid.
Reports wall times (the batched fit cold, i.e. with JIT compilation, and warm), their ratio, and
the relative difference of the best objectives.

    python benchmarks/analysis_fit_bench.py [--starts N]   # N < 4500: a random subset, time extrapolated
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from analysis.chinchilla import fit_chinchilla, grid_starts, to_vector
from analysis.chinchilla_scipy import fit_chinchilla_scipy
from analysis.datasets import chinchilla_points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=4500, help="scipy starts (subset of the grid; time extrapolated)")
    args = ap.parse_args()
    df = chinchilla_points(fit_only=True)
    logs = [np.log(df[c].to_numpy()) for c in ("N_params", "D_tokens", "loss")]
    grid = grid_starts("epoch")

    t0 = time.perf_counter()
    cold = fit_chinchilla(df, "N_params", "D_tokens", "loss", n_boot=0)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = fit_chinchilla(df, "N_params", "D_tokens", "loss", n_boot=0)
    t_warm = time.perf_counter() - t0

    idx = np.arange(len(grid))
    if args.starts < len(grid):
        idx = np.sort(np.random.default_rng(0).choice(len(grid), args.starts, replace=False))
    ref = fit_chinchilla_scipy(*logs, grid[idx])
    t_scipy = ref["wall_s"] * len(grid) / len(idx)

    rel = abs(warm.objective - ref["objective"]) / ref["objective"]
    dx = np.max(np.abs(to_vector(warm.params) - ref["x"]))
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "n_points": len(df), "n_starts": len(grid), "scipy_starts_run": len(idx),
        "batched_cold_s": round(t_cold, 2), "batched_warm_s": round(t_warm, 2),
        "scipy_loop_s": round(t_scipy, 1), "speedup_warm": round(t_scipy / t_warm, 1),
        "speedup_cold": round(t_scipy / t_cold, 1),
        "objective_batched": warm.objective, "objective_scipy": ref["objective"], "objective_rel_diff": rel,
        "max_abs_param_diff": float(dx), "n_at_best_batched": warm.details["n_at_best"],
        "n_at_best_scipy": int(np.sum(ref["objectives"] <= ref["objective"] * (1 + 1e-6))),
        "scipy_median_iters": float(np.median(ref["n_iter"])), "cold_objective": cold.objective,
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

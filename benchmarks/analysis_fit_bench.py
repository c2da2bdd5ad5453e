"""Benchmark: the Chinchilla Approach 3 fit, cold, against a scipy L-BFGS-B loop over the same 4,500 starts.

All methods minimise the same objective (Huber sum on log residuals, delta = 1e-3, scaled by 1/delta) on
the 240 reference points (analysis.datasets.chinchilla_points) with Epoch's 4,500-start grid. Every
method runs in a fresh subprocess (so "cold" is what a user running `scaling analyze` once waits for:
imports excluded and timed separately, first-call costs such as JIT compilation included), in paired
rounds (one of each per round, the order alternating), and the report gives per-round ratios and
their medians: on a shared machine only ratios measured side by side mean something.

    ours     fit_chinchilla(n_boot=0): numpy trust-region Newton from the 25 (alpha, beta) of the grid
             with the linear part projected out (nothing compiled); then a second call (warm) and a
             fit with 1,000 bootstrap replicates
    jax      the previous default: fit_chinchilla(linear="given", backend="jax"), all 4,500 starts with
             the jitted batched Newton (persistent compilation cache off, so cold includes compiling)
    scipy    scipy.optimize.minimize(method="L-BFGS-B") with the analytic gradient from every start in a
             Python loop (analysis.chinchilla_scipy), and a bootstrap loop of L-BFGS-B refits

The children run with OPENBLAS_NUM_THREADS=1 (scipy's L-BFGS-B loop is fastest so: on this 2-core
machine under load, OpenBLAS's default threads made it up to ~70x slower); --blas-threads default keeps
the environment as it is.

    python benchmarks/analysis_fit_bench.py [--rounds 3] [--no-jax] [--starts N] [--blas-threads default]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("N_params", "D_tokens", "loss")


def _child(method: str, n_starts: int, boot_reps: int) -> dict:
    t0 = time.perf_counter()
    from analysis.chinchilla import fit_chinchilla, grid_starts, to_vector
    from analysis.datasets import chinchilla_points
    df = chinchilla_points(fit_only=True)
    logs = [np.log(df[c].to_numpy()) for c in COLUMNS]
    out: dict = {"method": method}
    if method in ("ours", "jax"):
        kw = {} if method == "ours" else {"linear": "given", "backend": "jax"}
        if method == "jax":
            import jax
            jax.config.update("jax_enable_compilation_cache", False)
            out["jax_compilation_cache"] = "disabled"
        out["import_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        cold = fit_chinchilla(df, *COLUMNS, n_boot=0, **kw)
        out["cold_s"] = time.perf_counter() - t
        t = time.perf_counter()
        warm = fit_chinchilla(df, *COLUMNS, n_boot=0, **kw)
        out["warm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        boot = fit_chinchilla(df, *COLUMNS, n_boot=1000, **kw)
        out["with_boot_s"] = time.perf_counter() - t
        out["boot_s"] = boot.details["bootstrap"]["wall_s"]
        out["boot_se"] = {k: boot.se[k] for k in ("alpha", "beta", "E", "A", "B")}
        out["objective"], out["cold_objective"] = warm.objective, cold.objective
        out["x"] = to_vector(warm.params).tolist()
        out["n_at_best"] = warm.details["n_at_best"]
        out["n_distinct_starts"] = warm.details["n_distinct_starts"]
        out["quadratic_zone_share"] = warm.details["quadratic_zone"]["share"]
        out["jax_imported"] = "jax" in sys.modules
    else:
        from analysis.bootstrap import resample_weights
        from analysis.chinchilla_scipy import fit_chinchilla_scipy, huber_log_objective
        from scipy.optimize import minimize
        out["import_s"] = time.perf_counter() - t0
        grid = grid_starts("epoch")
        idx = np.arange(len(grid))
        if n_starts < len(grid):
            idx = np.sort(np.random.default_rng(0).choice(len(grid), n_starts, replace=False))
        ref = fit_chinchilla_scipy(*logs, grid[idx])
        out["cold_s"] = ref["wall_s"] * len(grid) / len(idx)
        out["starts_run"] = len(idx)
        out["objective"], out["x"] = ref["objective"], ref["x"].tolist()
        out["n_at_best"] = int(np.sum(ref["objectives"] <= ref["objective"] * (1 + 1e-6)))
        out["median_iters"] = float(np.median(ref["n_iter"]))
        # bootstrap: refit boot_reps replicates from the optimum (the weighted objective), extrapolated to 1,000
        W = resample_weights(len(df), boot_reps, np.random.default_rng(0))
        t = time.perf_counter()
        for w in W:
            keep = w > 0  # the drawn points, weighted by how often each was drawn
            minimize(huber_log_objective, ref["x"], args=(*(v[keep] for v in logs), 1e-3, 1e3, w[keep]), jac=True,
                     method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
        out["boot_s"] = (time.perf_counter() - t) * 1000 / boot_reps
    return out


def _run_child(method: str, args, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--starts", str(args.starts),
           "--boot-reps", str(args.boot_reps)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t  # interpreter start, imports, everything the child did
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--starts", type=int, default=4500, help="scipy starts (subset of the grid; time extrapolated)")
    ap.add_argument("--boot-reps", type=int, default=200, help="scipy bootstrap refits timed (extrapolated to 1,000)")
    ap.add_argument("--no-jax", action="store_true", help="skip the previous (jitted, 4,500-start) method")
    ap.add_argument("--blas-threads", default="1", help="OPENBLAS/OMP threads in the children, or 'default'")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.starts, args.boot_reps)))
        return

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if args.blas_threads != "default":
        env.update(OPENBLAS_NUM_THREADS=args.blas_threads, OMP_NUM_THREADS=args.blas_threads,
                   MKL_NUM_THREADS=args.blas_threads)
    methods = ["ours", "scipy"] + ([] if args.no_jax else ["jax"])
    rounds = []
    for r in range(args.rounds):
        order = methods if r % 2 == 0 else methods[::-1]
        got = {m: _run_child(m, args, env) for m in order}
        got["load_average_1min"] = os.getloadavg()[0]
        rounds.append(got)
        print(json.dumps({"round": r, **{m: {k: v for k, v in got[m].items() if k in
                                              ("cold_s", "warm_s", "boot_s", "process_s", "import_s")}
                                          for m in methods}}), file=sys.stderr)

    def ratios(num: str, den: str, key_num: str = "cold_s", key_den: str = "cold_s") -> list[float]:
        return [g[num][key_num] / g[den][key_den] for g in rounds]

    def med(vals):
        return round(statistics.median(vals), 3)

    last = rounds[-1]
    ours, ref = last["ours"], last["scipy"]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "python": platform.python_version(), "blas_threads": args.blas_threads, "rounds": args.rounds,
        "n_points": 240, "n_starts": 4500, "scipy_starts_run": ref["starts_run"],
        "load_average_1min": [g["load_average_1min"] for g in rounds],
        "ours_cold_s": [round(g["ours"]["cold_s"], 4) for g in rounds],
        "ours_warm_s": [round(g["ours"]["warm_s"], 4) for g in rounds],
        "ours_import_s": [round(g["ours"]["import_s"], 3) for g in rounds],
        "ours_process_s": [round(g["ours"]["process_s"], 3) for g in rounds],
        "ours_boot_s": [round(g["ours"]["boot_s"], 3) for g in rounds],
        "scipy_loop_s": [round(g["scipy"]["cold_s"], 2) for g in rounds],
        "scipy_process_s": [round(g["scipy"]["process_s"], 2) for g in rounds],
        "scipy_boot_s": [round(g["scipy"]["boot_s"], 2) for g in rounds],
        "speedup_cold_median": med(ratios("scipy", "ours")),
        "speedup_cold_per_round": [round(v, 1) for v in ratios("scipy", "ours")],
        "speedup_warm_median": med(ratios("scipy", "ours", "cold_s", "warm_s")),
        # counting each child's imports (analysis, numpy, pandas, scipy; JAX for the jitted method) too
        "speedup_cold_with_imports_median": med([(g["scipy"]["import_s"] + g["scipy"]["cold_s"])
                                                 / (g["ours"]["import_s"] + g["ours"]["cold_s"]) for g in rounds]),
        "speedup_boot_median": med(ratios("scipy", "ours", "boot_s", "boot_s")),
        "objective_ours": ours["objective"], "objective_scipy": ref["objective"],
        "objective_rel_diff": abs(ours["objective"] - ref["objective"]) / ref["objective"],
        "cold_objective_rel_diff": abs(ours["cold_objective"] - ref["objective"]) / ref["objective"],
        "max_abs_param_diff": float(np.max(np.abs(np.array(ours["x"]) - np.array(ref["x"])))),
        "n_at_best_ours": ours["n_at_best"], "n_at_best_scipy": ref["n_at_best"],
        "n_distinct_starts_ours": ours["n_distinct_starts"], "quadratic_zone_share": ours["quadratic_zone_share"],
        "ours_imports_jax": ours["jax_imported"], "ours_boot_se": ours["boot_se"],
        "scipy_median_iters": ref["median_iters"],
    }
    if not args.no_jax:
        jx = last["jax"]
        summary.update({
            "jax_cold_s": [round(g["jax"]["cold_s"], 2) for g in rounds],
            "jax_warm_s": [round(g["jax"]["warm_s"], 2) for g in rounds],
            "jax_boot_s": [round(g["jax"]["boot_s"], 2) for g in rounds],
            "jax_compile_s_estimate": [round(g["jax"]["cold_s"] - g["jax"]["warm_s"], 2) for g in rounds],
            "speedup_cold_jax_median": med(ratios("scipy", "jax")),
            "speedup_warm_jax_median": med(ratios("scipy", "jax", "cold_s", "warm_s")),
            "ours_vs_jax_cold_median": med(ratios("jax", "ours")),
            "ours_vs_jax_boot_median": med(ratios("jax", "ours", "boot_s", "boot_s")),
            "objective_jax_rel_diff": abs(jx["objective"] - ref["objective"]) / ref["objective"],
            "n_at_best_jax": jx["n_at_best"], "jax_boot_se": jx["boot_se"],
            "jax_compilation_cache": jx.get("jax_compilation_cache"),
        })
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

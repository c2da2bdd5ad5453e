"""Synthetic stores and tables with known answers, for tests, benchmarks and demos.

The generators write exactly the store layout the sweep runner writes (config.json, metrics.jsonl
with NaN for diverged losses, summary.json last, status), so the loader is exercised end to end.
Each returns the ground truth it was built from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

ROLES = ("embedding", "hidden", "output", "vector")
LN_VOCAB = math.log(256)


def write_run(run_dir: str | Path, config: dict, metrics: list[dict], summary: dict | None = None,
              status: dict | None = None) -> Path:
    """Write one run directory; summary.json is written last, as the runner does."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for row in metrics:
            fh.write(json.dumps(row) + "\n")
    if status is not None:
        (run_dir / "status").write_text(json.dumps(status))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def base_config(width: int = 128, depth: int = 4, kind: str = "sp", lr: float = 3e-3, batch_size: int = 32,
                steps: int = 200, seed: int = 0) -> dict:
    return {"model": {"kind": "transformer", "width": width, "depth": depth, "vocab_size": 256},
            "param": {"kind": kind, "lr_mult": {r: 1.0 for r in ROLES}},
            "optim": {"name": "adamw", "lr": lr, "decay_roles": ["embedding", "hidden", "output"]},
            "data": {"source": "synthetic"},
            "run": {"batch_size": batch_size, "steps": steps, "seed": seed, "context": 128},
            "_meta": {"git_sha": "0" * 8}}


def eval_steps(steps: int, per_octave: int = 2) -> list[int]:
    """Validation steps on a geometric grid round(2^(j/k)) plus the last step."""
    out = sorted({round(2 ** (j / per_octave)) for j in range(int(per_octave * math.log2(steps)) + 1)} | {steps})
    return [s for s in out if 1 <= s <= steps]


def curve_rows(final_loss: float, steps: int, batch_size: int, context: int = 128, lr: float = 1e-3,
               log_every: int = 10, diverge_step: int | None = None, rng=None, norm_scale: float = 1.0) -> list[dict]:
    """Metrics lines of a run whose loss decays from ln(256) to final_loss; NaN from diverge_step on."""
    rng = rng or np.random.default_rng(0)
    evals = set(eval_steps(steps))
    rows = []
    for step in sorted(set(range(log_every, steps + 1, log_every)) | evals):
        frac = (step / steps) ** 0.5
        loss = final_loss + (LN_VOCAB - final_loss) * (1 - frac) ** 2
        if diverge_step is not None and step >= diverge_step:
            loss = float("nan")
        row = {"step": step, "tokens": step * batch_size * context, "train_loss": loss + 0.01 * rng.standard_normal(),
               "lr": lr, "grad_norm": 1.0 / (1 + step) ** 0.3}
        for role in ROLES:
            row[f"norm/param/{role}"] = norm_scale * (1 + lr * step ** 0.7 * 50)
            row[f"norm/update/{role}"] = lr
            row[f"rms/param/{role}"] = 0.02 * (1 + lr * step ** 0.5)
            row[f"rms/update/{role}"] = lr * 0.1
        if step in evals:
            row["val_loss"] = loss
        rows.append(row)
        if diverge_step is not None and step >= diverge_step:
            break
    return rows


def true_lr_opt(kind: str, width: int, base_width: int = 64) -> float:
    """Ground truth of lr_sweep_store: SP optimum falls as 1/width, muP optimum is flat."""
    return 2.0**-6 * (width / base_width) ** -1.0 if kind == "sp" else 2.0**-7


def lr_sweep_store(store: str | Path, kinds=("sp", "mup"), widths=(64, 128, 256, 512),
                   log2_lrs=tuple(np.arange(-14, -2.5, 1.0)), seeds=(0,), noise: float = 0.002,
                   curvature: float = 0.03, diverge_above: float = 4.0, steps: int = 100, rng_seed: int = 0) -> dict:
    """Learning-rate x width sweep under each parametrization; returns {(kind, width): true optimal lr}.

    Final loss = 2.0 + 8/sqrt(width) + curvature * (log2 lr - log2 lr*)^2 + noise; runs with
    log2 lr - log2 lr* > diverge_above diverge (NaN losses, status diverged).
    """
    rng = np.random.default_rng(rng_seed)
    truth = {}
    for kind in kinds:
        for width in widths:
            opt = true_lr_opt(kind, width)
            truth[(kind, width)] = opt
            for x in log2_lrs:
                for seed in seeds:
                    lr = float(2.0**x)
                    gap = x - math.log2(opt)
                    final = 2.0 + 8 / math.sqrt(width) + curvature * gap**2 + noise * rng.standard_normal()
                    diverged = gap > diverge_above
                    cfg = base_config(width=width, kind=kind, lr=lr, steps=steps, seed=seed)
                    rows = curve_rows(final, steps, 32, lr=lr, diverge_step=steps // 3 if diverged else None, rng=rng)
                    summ = {"status": "diverged" if diverged else "done", "steps": rows[-1]["step"],
                            "tokens": rows[-1]["tokens"], "final_train_loss": rows[-1]["train_loss"],
                            "final_val_loss": float("nan") if diverged else final,
                            "best_val_loss": float("nan") if diverged else final, "wall_time_s": 1.0,
                            "n_params": 12 * width**2 * 4 + 2 * 256 * width, "n_params_nonembedding": 12 * width**2 * 4,
                            "flops_per_token": 6 * 12 * width**2 * 4,
                            "diverged_step": rows[-1]["step"] if diverged else None,
                            "diverge_reason": "loss is NaN" if diverged else None}
                    run_id = f"{kind}-w{width}-lr{x:+.1f}-s{seed}"
                    write_run(Path(store) / run_id, cfg, rows, summ, {"state": summ["status"]})
    return truth


def chinchilla_points(params: dict, n_grid=None, budgets=None, per_budget: int = 9, noise: float = 0.01,
                      seed: int = 0) -> pd.DataFrame:
    """IsoFLOP-style (N, D, loss) rows from L = E + A/N^alpha + B/D^beta with lognormal noise: per budget
    C, per_budget sizes log-spaced over [N_opt/8, 8 N_opt] (or the sizes n_grid), D = C / 6N."""
    rng = np.random.default_rng(seed)
    budgets = np.geomspace(1e17, 1e21, 5) if budgets is None else np.asarray(budgets, float)
    rows = []
    a, b = params["alpha"], params["beta"]
    G = (a * params["A"] / (b * params["B"])) ** (1 / (a + b))
    for C in budgets:
        n_opt = G * (C / 6) ** (b / (a + b))  # Hoffmann eq. 4: the sweep is centred on the true optimum
        for N in (np.geomspace(n_opt / 8, n_opt * 8, per_budget) if n_grid is None else n_grid):
            D = C / (6 * N)
            L = params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
            rows.append({"N": N, "D": D, "C": C, "loss": L * math.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def norm_sweep_table(batches=(16, 32, 64, 128, 256), log2_horizons=(20, 22, 24, 26),
                     log2_lrs=tuple(np.arange(-12, 0.1, 0.5)), opt_norm: float = 7.0, bstar_coef: float = 0.45,
                     noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """Loss and output norm per (B, D, lr) with a known optimal norm (log2 = opt_norm) at every horizon.

    log2 norm = log2 lr + 0.5 log2(D / B) + 1, so at the optimal norm log2 lr* = 0.5 log2 B - 0.5 log2 D
    + opt_norm - 1 (alpha = 0.5, beta = -0.5); B*(D) = 2^(bstar_coef log2 D - 5). Loss = L(D) +
    0.02 (log2 norm - opt_norm)^2 + 0.01 (log2 B - log2 B*)^2 + noise.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for B in batches:
        for lr2 in log2_lrs:
            run_id = f"B{B}-lr{lr2:+.1f}"
            for h in log2_horizons:
                norm2 = lr2 + 0.5 * (h - math.log2(B)) + 1
                bstar2 = bstar_coef * h - 5
                loss = 2 + 40 * 2.0 ** (-h / 8) + 0.02 * (norm2 - opt_norm) ** 2 + 0.01 * (math.log2(B) - bstar2) ** 2
                rows.append({"run_id": run_id, "B": B, "D": 2.0**h, "lr": 2.0**lr2, "output_norm": 2.0**norm2,
                             "loss": loss + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def big_store(store: str | Path, n_runs: int = 2000, n_steps: int = 1000, seed: int = 0) -> None:
    """A store of n_runs finished runs with n_steps metrics lines each (for the loading benchmark)."""
    rng = np.random.default_rng(seed)
    for i in range(n_runs):
        lr = float(2.0 ** rng.uniform(-12, -4))
        cfg = base_config(width=int(2 ** rng.integers(6, 10)), lr=lr, steps=n_steps, seed=i)
        rows = curve_rows(2.5 + rng.uniform(0, 0.5), n_steps, 32, lr=lr, log_every=1, rng=rng)
        summ = {"status": "done", "steps": n_steps, "tokens": rows[-1]["tokens"],
                "final_train_loss": rows[-1]["train_loss"],
                "final_val_loss": rows[-1]["val_loss"], "best_val_loss": rows[-1]["val_loss"], "wall_time_s": 1.0,
                "n_params": 1, "n_params_nonembedding": 1, "flops_per_token": 1, "diverged_step": None,
                "diverge_reason": None}
        write_run(Path(store) / f"run{i:05d}", cfg, rows, summ, {"state": "done"})


def norm_sweep_store(store: str | Path, context: int = 64, **table_kwargs) -> pd.DataFrame:
    """Constant-lr runs over (B, lr), one validation row per horizon, built from norm_sweep_table (D in
    tokens = step * B * context). Returns the table it was written from."""
    table = norm_sweep_table(**table_kwargs)
    for rid, g in table.groupby("run_id", sort=False):
        B, lr = int(g["B"].iloc[0]), float(g["lr"].iloc[0])
        rows = []
        for r in g.sort_values("D").itertuples():
            step = int(r.D // (B * context))
            rows.append({"step": step, "tokens": int(r.D), "train_loss": r.loss, "val_loss": r.loss, "lr": lr,
                         "norm/param/output": r.output_norm})
        cfg = base_config(lr=lr, batch_size=B, steps=rows[-1]["step"])
        cfg["run"]["context"] = context
        summ = {"status": "done", "steps": rows[-1]["step"], "tokens": rows[-1]["tokens"],
                "final_train_loss": rows[-1]["train_loss"], "final_val_loss": rows[-1]["val_loss"],
                "best_val_loss": min(r["val_loss"] for r in rows), "wall_time_s": 1.0, "n_params": 1,
                "n_params_nonembedding": 1, "flops_per_token": 1, "diverged_step": None, "diverge_reason": None}
        write_run(Path(store) / rid, cfg, rows, summ, {"state": "done"})
    return table


def true_optimizer_lr(name: str, steps: int) -> float:
    """Ground truth of optimizer_sweep_store: each optimizer's own optimal lr, falling slowly with the horizon."""
    base = {"adamw": 2.0**-9, "muon": 2.0**-6}.get(name, 2.0**-8)
    return base * (steps / 256) ** -0.25


def optimizer_sweep_store(store: str | Path, speedups: dict | None = None, horizons=(64, 128, 256, 512, 1024),
                          log2_lr_offsets=tuple(np.arange(-3.0, 3.1, 1.0)), seeds=(0,), noise: float = 0.001,
                          curvature: float = 0.02, batch_size: int = 32, context: int = 128, E: float = 2.0,
                          A: float = 40.0, exponent: float = 0.3, width: int = 128, rng_seed: int = 0) -> dict:
    """Optimizer x learning rate x horizon sweep (one run per point and seed, summary tokens = the horizon).

    Final loss of optimizer o at D tokens and lr: E + A (m_o D)^-exponent + curvature (log2 lr - log2 lr*_o)^2
    + noise, with m_o = speedups[o] (adamw 1.0, muon 1.4 by default: muon reaches adamw's loss with 1/1.4
    of the data at every horizon) and lr*_o = true_optimizer_lr(o, steps). The lr grid is centred on each
    optimizer's own optimum (offsets in log2). Returns {"speedups", "lr_opt": {(o, steps): lr*}}."""
    speedups = {"adamw": 1.0, "muon": 1.4} if speedups is None else dict(speedups)
    rng = np.random.default_rng(rng_seed)
    lr_opt = {}
    for name, mult in speedups.items():
        for steps in horizons:
            opt = true_optimizer_lr(name, steps)
            lr_opt[(name, steps)] = opt
            tokens = steps * batch_size * context
            for off in log2_lr_offsets:
                lr = float(opt * 2.0**off)
                for seed in seeds:
                    final = E + A * (mult * tokens) ** -exponent + curvature * off**2 + noise * rng.standard_normal()
                    cfg = base_config(width=width, lr=lr, batch_size=batch_size, steps=steps, seed=seed)
                    cfg["optim"]["name"] = name
                    cfg["run"]["context"] = context
                    rows = curve_rows(final, steps, batch_size, context, lr=lr, log_every=max(steps // 8, 1), rng=rng)
                    rows[-1]["val_loss"] = final
                    summ = {"status": "done", "steps": steps, "tokens": tokens, "final_train_loss": final,
                            "final_val_loss": final, "best_val_loss": final, "wall_time_s": 1.0,
                            "n_params": 12 * width**2 * 4, "n_params_nonembedding": 12 * width**2 * 4,
                            "flops_per_token": 6 * 12 * width**2 * 4, "diverged_step": None, "diverge_reason": None}
                    write_run(Path(store) / f"{name}-s{steps}-lr{off:+.1f}-seed{seed}", cfg, rows, summ,
                              {"state": "done"})
    return {"speedups": speedups, "lr_opt": lr_opt}

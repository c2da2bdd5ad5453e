"""Recipes "norm_guided_lr" and "role_lr" (Filatov et al., "Optimal Scaling Needs Optimal Norm", arXiv 2510.03871).

norm_guided_lr: predict eta*(D1) at D1 = factor x D0 from the runs up to D0, as the lr whose output-norm
trajectory reaches the optimal norm at D1 (analysis.norm_guided, whose docstring gives the design), next to
the power law of eta*(D) fitted up to D0, against eta*(D1) measured on the full data.
role_lr: per-layer learning-rate sensitivity from a scan of the per-role lr multipliers (analysis.role_lr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.norm_guided import METHODS, lr_optima_by_horizon, norm_curve_table, norm_guided_prediction
from analysis.plots.predict import plot_norm_guided, plot_norm_trajectories, plot_role_heatmap, plot_role_slices
from analysis.recipe_tools import finished_runs, pick_column, state_counts, write_figure
from analysis.role_lr import role_sensitivity
from analysis.validate import require_columns


def norm_guided_lr(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                   d0: float | None = None, factor: float = 4.0, loss: str = "val_loss",
                   norm: str = "norm/param/output", horizon: str = "tokens", lr: str = "optim.lr",
                   batch: str = "run.batch_size", seed_col: str | None = "run.seed", k: int = 5, octaves: float = 2.0,
                   trajectory_octaves: float = 2.0, n_boot: int = 500, seed: int = 0) -> dict:
    """Norm-guided prediction of eta*(D): from the runs up to d0, per batch size the lr whose output-norm
    trajectory reaches the optimal norm at D1 = factor x d0, with the optimal norm held constant or
    drifting, next to a power law of eta*(D) fitted up to d0, both scored against the measured eta*(D1).

    d0 defaults to the largest evaluated horizon <= the largest one / factor; octaves: the horizons
    [d0 / 2^octaves, d0] give the optimal norms and the power law; trajectory_octaves: each lr's norm
    trajectory is a line in log2-log2 fitted on [d0 / 2^trajectory_octaves, d0]; k: points of each
    parabola; errors are log2(predicted / measured) with bootstrap intervals (seeds, else residuals)."""
    warnings: list[str] = []
    require_columns(curves, [loss, norm, horizon], "norm_guided_lr (curves)")
    require_columns(runs, [lr, batch], "norm_guided_lr (runs)")
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    if seed_col is not None and seed_col not in data:
        seed_col = None
    table = norm_curve_table(data, curves, loss=loss, norm=norm, horizon=horizon, lr=lr, batch=batch,
                             seed_col=seed_col)
    result = norm_guided_prediction(table, d0=d0, factor=factor, k=k, octaves=octaves,
                                    trajectory_octaves=trajectory_octaves, n_boot=n_boot, seed=seed, horizon=horizon)
    warnings += result["warnings"]
    lr_optima = lr_optima_by_horizon(table, k)
    figures: list[str] = []
    write_figure(plot_norm_guided(result, table, lr_optima), out_dir, "norm_guided_lr", figures)
    write_figure(plot_norm_trajectories(result, table), out_dir, "norm_trajectories", figures)
    return {"recipe": "norm_guided_lr",
            "columns": {"loss": loss, "norm": norm, "horizon": horizon, "lr": lr, "batch": batch, "seed": seed_col},
            "runs": counts, "d0": result["d0"], "d1": result["d1"], "settings": result["settings"],
            "bootstrap": result["bootstrap"], "per_batch": result["per_batch"], "errors": result["errors"],
            "optima": result["optima"], "trajectories": result["trajectories"], "lr_optima": lr_optima,
            "figures": figures, "warnings": warnings, "summary": _norm_guided_summary(result)}


def _log2_text(v: float) -> str:
    return f"2^{v:.2f}" if np.isfinite(v) else "-"


def _ci_text(v: float, ci) -> str:
    lo, hi = ci
    return f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else (f"{v:+.2f}" if np.isfinite(v) else "-")


def _norm_guided_summary(result: dict) -> list[dict]:
    rows = []
    for _, r in result["per_batch"].iterrows():
        for m in METHODS:
            flag = "MEAS EDGE" if r["meas_edge"] else (f"PRED {r[f'{m}_edge'].upper()} EDGE" if r[f"{m}_edge"] else "")
            target = r.get(f"log2_norm_target_{m}", np.nan)
            rows.append({"B": r["B"], "method": m, "log2 norm*": f"{target:.2f}" if np.isfinite(target) else "",
                         "eta pred": _log2_text(r[f"log2_eta_{m}"]), "eta* meas": _log2_text(r["log2_eta_meas"]),
                         "log2 pred/meas": _ci_text(r[f"err_{m}"], r[f"err_{m}_ci"]), "flag": flag})
    for _, e in result["errors"].iterrows():
        lo, hi = e["mae_log2_ci"]
        rows.append({"B": "all", "method": e["method"], "log2 norm*": "", "eta pred": "", "eta* meas": "",
                     "log2 pred/meas": f"MAE {e['mae_log2']:.2f} [{lo:.2f}, {hi:.2f}] over {e['n_batches']}",
                     "flag": f"{e['censored']} censored" if e["censored"] else ""})
    return rows


def role_lr(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *, y: str | None = None,
            prefix: str = "param.lr_mult.", reference: float = 1.0, k: int = 5, window: float = 2.0,
            rank_by: str = "curvature", n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-layer lr sensitivity: per role (each varying param.lr_mult.* column) the loss over its
    multiplier with the other roles at the reference, the optimal multiplier, the curvature and spread
    of the loss, the most sensitive role, and the joint optimum of two roles scanned on a grid.

    y defaults to final_val_loss, else best_val_loss, else final_train_loss; k: points of each parabola
    in log2 multiplier; window: octaves around the argmin that the joint quadratic surface is fitted on;
    rank_by: "curvature" (loss rise one octave from the optimum) or "spread" (max - min of the slice)."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    y = pick_column(data, y, ("final_val_loss", "best_val_loss", "final_train_loss"), "role_lr")
    res = role_sensitivity(data, y, prefix=prefix, reference=reference, k=k, window=window, rank_by=rank_by,
                           n_boot=n_boot, seed=seed)
    pooled = _pooled_warning(data, [prefix + r for r in res["roles"]["role"]])
    warnings += ([pooled] if pooled else []) + res["warnings"]
    figures: list[str] = []
    write_figure(plot_role_slices(res["roles"], res["slices"], y=y), out_dir, "role_lr_slices", figures)
    for g in res["grids"]:
        write_figure(plot_role_heatmap(g, prefix, y=y), out_dir, f"role_lr_{g['roles'][0]}_x_{g['roles'][1]}",
                     figures)
    return {"recipe": "role_lr", "columns": {"y": y, "prefix": prefix}, "runs": counts, "reference": reference,
            "roles": res["roles"], "most_sensitive": res["most_sensitive"], "rank_by": rank_by,
            "differences": res["differences"], "grids": res["grids"], "slices": res["slices"], "cells": res["cells"],
            "bootstrap": res["bootstrap"], "figures": figures, "warnings": warnings, "summary": _role_summary(res)}


def _pooled_warning(data: pd.DataFrame, cols: list[str]) -> str | None:
    """Runs sharing every multiplier (and seed) are averaged as seeds: say so when they may be other groups."""
    keys = cols + (["run.seed"] if "run.seed" in data else [])
    dup = data.duplicated(keys, keep=False)
    if not dup.any():
        return None
    return (f"{int(dup.sum())} runs share their multipliers{' and seed' if 'run.seed' in data else ''}: their losses "
            "are averaged as seeds; if they differ in model size or horizon, analyse one group at a time")


def _role_summary(res: dict) -> list[dict]:
    rows = []
    for _, r in res["roles"].iterrows():
        lo, hi = r["log2_mult_ci"]
        a_lo, a_hi = r["curvature_ci"]
        rows.append({"role": r["role"], "log2 m*": f"{r['log2_mult_opt']:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]"
                                                                                    if np.isfinite(lo) else ""),
                     "curvature": f"{r['curvature']:.4f}" + (f" [{a_lo:.4f}, {a_hi:.4f}]" if np.isfinite(a_lo) else ""),
                     "spread": f"{r['spread']:.4f}",
                     "flag": " ".join(x for x in ("MOST SENSITIVE" if r["most_sensitive"] else "",
                                                  f"{r['edge'].upper()} EDGE" if r["edge"] else "") if x)})
    for _, d in res["differences"].iterrows():
        rows.append({"role": f"{d['role_a']} - {d['role_b']}", "log2 m*": _ci_text(d["delta_log2_mult"], d["ci"]),
                     "curvature": "", "spread": "", "flag": "bound" if d["bound"] else ""})
    for g in res["grids"]:
        (u1, u2), (c1, c2) = g["log2_mult_opt"], g["log2_mult_ci"]
        rows.append({"role": f"joint {g['roles'][0]} x {g['roles'][1]}",
                     "log2 m*": f"({_ci_text(u1, c1)}, {_ci_text(u2, c2)})", "curvature": "",
                     "spread": f"loss {g['y_opt']:.4f}", "flag": "" if g["ok"] else "FLAGGED " + g["edge"]})
    return rows

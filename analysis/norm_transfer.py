"""Norm transfer ("Optimal Scaling Needs Optimal Norm", Filatov et al. 2025, arXiv 2510.03871).

Workflow, on one row per (run, horizon):
1. `at_horizons`: losses and norms at each validation horizon of constant-lr runs, joined with the
   run config, optionally smoothed over neighbouring evaluations;
2. `optimal_norms`: per (B, D), the parabola of loss against log2 of the output norm on the 7 points
   nearest the minimum (optionally with the intercept fixed to the loss at initialisation); optimal
   norm, loss and eta* (lr of the run whose norm is nearest the optimum), edge/concavity flags;
3. `norm_per_horizon`: per D, B* = the batch with the lowest optimal loss and the optimal norm there;
   `norm_transfer_summary`: mean and spread of the optimal log2 norm across horizons;
4. `fit_lr_joint` (log2 eta* = alpha log2 B + beta log2 D + gamma), `fit_bstar` (B* = a D^b) and
   `first_band_horizon` + `fit_first_band` (log2 eta = c log2 B + beta log2 D_first + gamma).
"""

from __future__ import annotations

import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.optimum import find_optima
from analysis.powerlaw import fit_log_linear, fit_power_law
from analysis.validate import as_list, public, require_columns, require_frame


@public
def at_horizons(curves: pd.DataFrame, runs: pd.DataFrame, value_cols: Sequence[str] = ("val_loss",),
                config_cols: Sequence[str] = (), horizon: str = "tokens", require: str | None = None,
                smooth: float = 0.0) -> pd.DataFrame:
    """One row per (run, horizon) from the curves rows where `require` (default: the first value
    column) is logged, joined with config_cols from runs. Values logged on separate lines at the same
    horizon (a training line with the norms, an eval line with val_loss) are merged. smooth > 0: each
    value becomes the mean over that run's rows within +-smooth horizon units, and <col>_sd their spread.
    Curves of runs absent from `runs` are dropped with an AnalysisWarning naming some (they have no
    config to group them by); none left raises."""
    value_cols = list(value_cols)
    require = require or value_cols[0]
    what = "at_horizons"
    require_frame(curves, f"{what} (curves)")
    require_frame(runs, f"{what} (runs)")
    require_columns(curves, ["run_id", horizon, *value_cols], what)
    require_columns(runs, ["run_id", *config_cols], what)
    rows = curves[["run_id", horizon, *value_cols]].copy()
    rows["run_id"] = rows["run_id"].astype(str)
    known = set(runs["run_id"].astype(str))
    orphan = ~rows["run_id"].isin(known)
    if orphan.any():
        ids = sorted(rows.loc[orphan, "run_id"].unique())
        pywarnings.warn(f"{what}: curves of {len(ids)} run(s) absent from the runs table dropped "
                        f"({', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}): they have no config", AnalysisWarning,
                        stacklevel=3)
        rows = rows[~orphan]
        if rows.empty:
            raise AnalysisError(f"{what}: no curve rows belong to a run of the runs table")
    if rows.duplicated(["run_id", horizon]).any():  # train and eval lines of one step: merge their values
        rows = rows.groupby(["run_id", horizon], sort=False, as_index=False).first()
    rows = rows[rows[require].notna()]
    if rows.empty:
        raise AnalysisError(f"{what}: no curve row logs {require!r}")
    if smooth > 0:
        parts = []
        for rid, g in rows.groupby("run_id", sort=False):
            g = g.sort_values(horizon)
            h = g[horizon].to_numpy(float)
            lo, hi = np.searchsorted(h, h - smooth, "left"), np.searchsorted(h, h + smooth, "right")
            for c in value_cols:
                v = g[c].to_numpy(float)
                g[c + "_sd"] = [np.nanstd(v[a:b]) for a, b in zip(lo, hi)]
                g[c] = [np.nanmean(v[a:b]) for a, b in zip(lo, hi)]
            parts.append(g)
        rows = pd.concat(parts) if parts else rows
    cfg = runs[["run_id", *config_cols]].astype({"run_id": str}).drop_duplicates("run_id")
    return rows.merge(cfg, on="run_id", how="inner").reset_index(drop=True)


@public
def optimal_norms(table: pd.DataFrame, norm: str = "output_norm", loss: str = "loss", lr: str = "lr",
                  by: str | Sequence[str] = ("B", "D"), *, k: int = 7, intercept: float | None = None,
                  weights: str | None = None, n_boot: int = 200, seed: int = 0, empty: str = "raise") -> pd.DataFrame:
    """Per group: parabola of loss vs log2(norm) on the k points nearest the minimum (paper App. A.4).
    Columns: group keys, norm_opt, log2_norm_opt, log2_norm_lo/hi, loss_opt, lr_opt, at_edge,
    concave, ok, n_points, n_diverged. empty: as in find_optima ("keep" gives NaN rows)."""
    by = as_list(by)
    what = "optimal_norms"
    require_frame(table, what)
    require_columns(table, [norm, loss, lr, *by, weights], what)
    opt = find_optima(table, norm, loss, by, method="quadratic", k=k, intercept=intercept, weights=weights,
                      n_boot=n_boot, seed=seed, snap_rtol=0.0, empty=empty)
    lr_opt = []
    for _, r in opt.iterrows():
        if not np.isfinite(r["u_opt"]):
            lr_opt.append(np.nan)
            continue
        m = np.ones(len(table), bool)
        for b in by:
            m &= (table[b] == r[b]).to_numpy()
        g = table[m & np.isfinite(table[loss].to_numpy(float)) & (table[norm].to_numpy(float) > 0)]
        lr_opt.append(float(g[lr].iloc[np.argmin(np.abs(np.log2(g[norm].to_numpy(float)) - r["u_opt"]))])
                      if len(g) else np.nan)
    out = opt.rename(columns={"x_opt": "norm_opt", "u_opt": "log2_norm_opt", "y_opt": "loss_opt"})
    with np.errstate(divide="ignore"):  # an edge optimum's one-sided interval reaches 0 or inf
        out["log2_norm_lo"], out["log2_norm_hi"] = np.log2(out.pop("x_lo")), np.log2(out.pop("x_hi"))
    out["lr_opt"] = lr_opt
    return out


@public
def norm_per_horizon(optima: pd.DataFrame, horizon: str = "D", batch: str = "B") -> pd.DataFrame:
    """Per horizon: B* (lowest optimal loss over batch sizes), its optimal norm, lr and flags.
    b_at_edge marks B* at the smallest or largest batch tried. A horizon without a finite optimum is
    skipped with an AnalysisWarning; none left raises."""
    what = "norm_per_horizon"
    require_frame(optima, what)
    require_columns(optima, [horizon, batch, "loss_opt", "log2_norm_opt", "lr_opt"], what)
    rows, skipped = [], []
    for h, g in optima.groupby(horizon, sort=True):
        g = g[np.isfinite(g["loss_opt"])]
        if g.empty:
            skipped.append(h)
            continue
        best = g.loc[g["loss_opt"].idxmin()]
        bs = np.sort(g[batch].unique())
        rows.append({horizon: h, "B_opt": best[batch], "loss_opt": best["loss_opt"],
                     "log2_norm_opt": best["log2_norm_opt"], "log2_norm_lo": best.get("log2_norm_lo", np.nan),
                     "log2_norm_hi": best.get("log2_norm_hi", np.nan), "lr_opt": best["lr_opt"],
                     "norm_ok": bool(best.get("ok", True)), "b_at_edge": best[batch] in (bs[0], bs[-1])})
    if skipped:
        shown = ", ".join(f"{h:g}" if isinstance(h, (int, float)) else str(h) for h in skipped[:4])
        pywarnings.warn(f"{what}: {len(skipped)} horizon(s) without a finite optimum skipped ({horizon}={shown})",
                        AnalysisWarning, stacklevel=3)
    if not rows:
        raise AnalysisError(f"{what}: no horizon has a finite optimum")
    return pd.DataFrame(rows)


@public
def norm_transfer_summary(per: pd.DataFrame, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> dict:
    """Mean, spread and bootstrap interval (over horizons) of the optimal log2 norm at B*."""
    v = per["log2_norm_opt"].to_numpy(float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise AnalysisError("norm_transfer_summary: no finite optimal norms")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return {"log2_norm_mean": float(v.mean()), "log2_norm_sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "log2_norm_range": [float(v.min()), float(v.max())], "mean_ci": percentile_interval(means, level),
            "n_horizons": int(v.size)}


@public
def fit_lr_joint(optima: pd.DataFrame, lr: str = "lr_opt", batch: str = "B", horizon: str = "D",
                 only_ok: bool = True, **kwargs) -> Fit:
    """log2 eta*(B, D) = alpha log2 B + beta log2 D + gamma by OLS over all (B, D) optima (paper Fig. 3b).
    Edge or concave optima are excluded when only_ok (censored values)."""
    d = optima[optima["ok"]] if only_ok and "ok" in optima else optima
    fit = fit_log_linear(d.reset_index(drop=True), lr, [batch, horizon], base=2.0, name="lr_joint", **kwargs)
    fit.details["excluded_optima"] = int(len(optima) - len(d))
    return fit


@public
def fit_bstar(per: pd.DataFrame, horizon: str = "D", batch: str = "B_opt", **kwargs) -> Fit:
    """B*(D) = a D^b (paper Fig. 7b)."""
    fit = fit_power_law(per.reset_index(drop=True), horizon, batch, name="bstar", **kwargs)
    if "b_at_edge" in per and per["b_at_edge"].any():
        fit.warnings.append(f"{int(per['b_at_edge'].sum())} horizon(s) have B* at the edge of the batch grid")
    return fit


@public
def first_band_horizon(table: pd.DataFrame, norm: str = "output_norm", horizon: str = "D", run: str = "run_id",
                       band: tuple[float, float] = (6.8, 7.2), keep: Sequence[str] = ("B", "lr")) -> pd.DataFrame:
    """Per run, the first horizon at which log2(norm) reaches the band's lower edge (NaN if never);
    in_band tells whether the norm there is still below the upper edge."""
    require_frame(table, "first_band_horizon")
    require_columns(table, [norm, horizon, run, *keep], "first_band_horizon")
    rows = []
    for rid, g in table.sort_values(horizon).groupby(run, sort=False):
        l2 = np.log2(g[norm].to_numpy(float))
        hit = np.flatnonzero(l2 >= band[0])
        row = {run: rid, **{c: g[c].iloc[0] for c in keep}}
        row[horizon + "_first"] = float(g[horizon].iloc[hit[0]]) if hit.size else np.nan
        row["in_band"] = bool(hit.size and l2[hit[0]] <= band[1])
        rows.append(row)
    return pd.DataFrame(rows)


@public
def fit_first_band(first: pd.DataFrame, lr: str = "lr", batch: str = "B", horizon: str = "D_first",
                   **kwargs) -> Fit:
    """Free fit log2 eta = c log2 B + beta log2 D_first + gamma (paper Fig. 3a; heuristic c = 1.5, beta = -1)."""
    d = first[np.isfinite(first[horizon].to_numpy(float))].reset_index(drop=True)
    fit = fit_log_linear(d, lr, [batch, horizon], base=2.0, name="first_band", **kwargs)
    fit.details["heuristic"] = "log2 eta = 1.5 log2 B - log2 D_first + gamma"
    fit.details["runs_never_reaching_band"] = int(len(first) - len(d))
    return fit

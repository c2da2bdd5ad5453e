"""Recipe "optimizer_comparison": optimizers x learning rate x horizon sweeps, each optimizer at its own tuned lr.

Per (group, optimizer, horizon): the best loss over the learning rates tried (seeds averaged per lr),
the tuned lr (quadratic in log2 lr around the argmin, with its interval and edge flag: an optimum at
the edge of the lr grid is a bound, and that optimizer is not tuned there). Then the speedup of every
optimizer over the baseline at each horizon ("Fantastic Pretraining Optimizers", Wen et al. 2025,
arXiv 2509.02046, as in analysis.speedup): the baseline's best loss vs horizon is fitted as
L(k) = alpha k^-B + beta (k = horizon / the smallest baseline horizon), and another optimizer's best
loss L_o at horizon h is worth k_eff(L_o) of the baseline's data; speedup = k_eff / k. Intervals
include both sides' noise: seeds when there are several (the loss at the tuned lr per seed), else the
loss_noise option (conditional, and warned).

Horizons are one per run (a run's `horizon` column, e.g. tokens from summary.json: separate runs per
run length, the right design for decaying schedules), or with from_curves=true every logged
evaluation of constant-lr runs (`curve_loss` at each value of `horizon` along the curves).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.grid import snap_relative
from analysis.norm_transfer import at_horizons
from analysis.optimum import find_optima
from analysis.plots import plot_optimizer_comparison
from analysis.recipe_tools import finished_runs, guarded, pick_column, state_counts, write_figure
from analysis.speedup import optimizer_speedup
from analysis.validate import as_list, group_label, pooled_groups, require_columns


def optimizer_comparison(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                         optimizer: str = "optim.name", lr: str = "optim.lr", horizon: str = "tokens",
                         loss: str | None = None, baseline: str = "adamw", by: str | list | None = None,
                         seed_col: str | None = "run.seed", from_curves: bool = False, curve_loss: str = "val_loss",
                         loss_noise: float | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per horizon, each optimizer's best loss at its own tuned lr, and the speedup over `baseline` with
    intervals (per value of `by`, e.g. model.width); loss defaults to final_val_loss, else best_val_loss,
    else final_train_loss; loss_noise: the sd of one run's loss, used when there is one seed."""
    what = "optimizer_comparison"
    warnings: list[str] = []
    by = as_list(by)
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    require_columns(data, [optimizer, lr, *by], what)
    if seed_col is not None and (seed_col not in data or data[seed_col].nunique() < 2):
        seed_col = None  # one seed: the speedup interval needs loss_noise
    cfg = list(dict.fromkeys([optimizer, lr, *by] + ([seed_col] if seed_col else [])))
    if from_curves:
        if curves is None or curves.empty:
            raise AnalysisError(f"{what}: from_curves=true but the store has no curves")
        table = at_horizons(curves[curves["run_id"].astype(str).isin(data["run_id"].astype(str))], data,
                            [curve_loss], cfg, horizon=horizon).rename(columns={curve_loss: "loss"})
        loss = curve_loss
    else:
        loss = pick_column(data, loss, ("final_val_loss", "best_val_loss", "final_train_loss"), what)
        require_columns(data, [horizon], what)
        table = data[["run_id", horizon, loss, *cfg]].rename(columns={loss: "loss"})
    table = table.rename(columns={horizon: "horizon"}) if horizon != "horizon" else table
    table = table[np.isfinite(pd.to_numeric(table["horizon"], errors="coerce").to_numpy(float))].copy()
    if table.empty:
        raise AnalysisError(f"{what}: no run has a finite {horizon!r}")
    table["horizon"] = snap_relative(table["horizon"].to_numpy(float), 1e-2)
    table[lr] = snap_relative(pd.to_numeric(table[lr]).to_numpy(float), 1e-3)
    if baseline not in set(table[optimizer]):
        raise AnalysisError(f"{what}: baseline {baseline!r} is not among the optimizers in column {optimizer!r} "
                            f"({', '.join(map(str, sorted(table[optimizer].dropna().unique(), key=str)))})")
    config = [c for c in data.columns if "." in c and not c.startswith(("_meta.", "status."))]
    config += [c for c in ("store", "experiment") if c in data.columns]
    extra = data[[c for c in config if c not in table.columns]]
    if from_curves:  # rows per (run, horizon): their runs' config by run id
        context = table.merge(extra.assign(run_id=data["run_id"].astype(str)).drop_duplicates("run_id"),
                              on="run_id", how="left")
    else:  # rows are runs: the same index as data
        context = table.join(extra)
    pooled = pooled_groups(context, [*by, optimizer, "horizon", lr], "loss", seed_col, ignore=["run_id"], what=what,
                           require_hint=bool(by), candidates=config)
    if pooled:
        warnings.append(pooled)
    keys = [*by, optimizer, "horizon"]
    tuned = _tuned(table, keys, lr, seed_col, n_boot, seed, warnings)
    per_seed = _per_seed_at_tuned(table, tuned, keys, lr, seed_col)
    speed, fits = _speedups(per_seed, tuned, by, optimizer, baseline, seed_col, loss_noise, n_boot, seed, warnings)
    figures: list[str] = []
    write_figure(plot_optimizer_comparison(tuned, speed, optimizer, "horizon", baseline, fits,
                                           panel=by[0] if len(by) == 1 else None, xlabel=horizon,
                                           title=f"{loss} at each optimizer's tuned lr ({horizon})"),
                 out_dir, "optimizer_comparison", figures)
    summary = []
    for _, r in tuned.sort_values([*by, "horizon", optimizer]).iterrows():
        s = speed[(speed[optimizer] == r[optimizer]) & np.isclose(speed["horizon"], r["horizon"])] \
            if len(speed) else speed
        for b in by:
            s = s[s[b] == r[b]] if len(s) else s
        row = {**{b: r[b] for b in by}, horizon: r["horizon"], optimizer: r[optimizer], "lr*": r["lr_opt"],
               "loss": r["loss"], "edge": "LR EDGE" if r["at_edge"] else "", "speedup": ""}
        if r[optimizer] == baseline:
            row["speedup"] = "baseline"
        elif len(s):
            q = s.iloc[0]
            row["speedup"] = f"{q['speedup']:.3g}" + (f" [{q['speedup_lo']:.3g}, {q['speedup_hi']:.3g}]"
                                                      if np.isfinite(q.get("speedup_lo", np.nan)) else "")
        summary.append(row)
    return {"recipe": "optimizer_comparison", "runs": counts,
            "columns": {"optimizer": optimizer, "lr": lr, "horizon": horizon, "loss": loss, "by": by, "seed": seed_col},
            "baseline": baseline, "tuned": tuned, "speedups": speed,
            "baseline_fits": {k: f.to_dict() for k, f in fits.items()}, "figures": figures, "warnings": warnings,
            "summary": summary}


def _tuned(table, keys, lr, seed_col, n_boot, seed, warnings) -> pd.DataFrame:
    """Per (group, optimizer, horizon): tuned lr (quadratic in log2 lr) with interval and edge flag, the best
    seed-mean loss over the lrs tried, the number of lrs and seeds."""
    opt = find_optima(table, lr, "loss", keys, method="quadratic", seed_col=seed_col, n_boot=n_boot, seed=seed,
                      empty="keep")
    rows = []
    for _, r in opt.iterrows():
        m = np.ones(len(table), bool)
        for c in keys:
            m &= (table[c] == r[c]).to_numpy()
        g = table[m & np.isfinite(table["loss"].to_numpy(float))]
        label = group_label(keys, tuple(r[c] for c in keys))
        if g.empty:
            warnings.append(f"no finite loss for {label}: no tuned lr")
            rows.append({**{c: r[c] for c in keys}, "lr_best": np.nan, "loss": np.nan})
            continue
        means = g.groupby(lr)["loss"].mean()
        n_lrs = len(means)
        rows.append({**{c: r[c] for c in keys}, "lr_best": float(means.idxmin()), "loss": float(means.min()),
                     "n_lrs": n_lrs})
        if n_lrs < 3:
            warnings.append(f"{label}: only {n_lrs} learning rate(s) tried: not tuned")
        elif r["at_edge"]:
            warnings.append(f"{label}: the best lr is at the {r['edge_side']} edge of the grid: the optimizer is not "
                            "tuned there (its loss is an upper bound, its speedup a lower bound)")
    best = pd.DataFrame(rows)
    out = opt.rename(columns={"x_opt": "lr_opt", "x_lo": "lr_lo", "x_hi": "lr_hi"})
    out = out[[*keys, "lr_opt", "lr_lo", "lr_hi", "at_edge", "edge_side", "concave", "n_seeds", "n_diverged"]]
    return out.merge(best, on=keys, how="left")


def _per_seed_at_tuned(table, tuned, keys, lr, seed_col) -> pd.DataFrame:
    """One row per (group, optimizer, horizon, seed): the loss of the run at the best lr (the speedup's seeds)."""
    t = table.merge(tuned[[*keys, "lr_best"]], on=keys, how="inner")
    t = t[np.isclose(t[lr].to_numpy(float), t["lr_best"].to_numpy(float)) & np.isfinite(t["loss"].to_numpy(float))]
    if seed_col:
        return t.groupby([*keys, seed_col], as_index=False)["loss"].mean()
    return t.groupby(keys, as_index=False)["loss"].mean()


def _speedups(per_seed, tuned, by, optimizer, baseline, seed_col, loss_noise, n_boot, seed, warnings):
    parts, fits = [], {}
    groups = per_seed.groupby(by, sort=True) if by else [((), per_seed)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = group_label(by, key) if by else "all"
        base = g[g[optimizer] == baseline]
        if base["horizon"].nunique() < 3:
            warnings.append(f"speedup{'' if not by else f' ({label})'}: the baseline {baseline!r} has "
                            f"{base['horizon'].nunique()} horizon(s) with a tuned loss; need at least 3 to fit its "
                            "curve")
            continue
        unit = float(base["horizon"].min())
        d = g.assign(k=g["horizon"] / unit)
        result = {}

        def run(d=d, result=result):
            result["table"], f = optimizer_speedup(d, optimizer, "k", "loss", baseline, by, seed_col=seed_col,
                                                   loss_noise=loss_noise, n_boot=n_boot, seed=seed)
            return next(iter(f.values()))

        fit = guarded(f"baseline curve L(k) of {baseline}" + (f" ({label})" if by else ""), run, warnings)
        if fit is None:
            continue
        fit.details["k_unit"] = unit
        fits[label] = fit
        t = result["table"]
        if len(t):
            t = t.assign(horizon=t["k"] * unit, horizon_eff=t["k_eff"] * unit)
            parts.append(t)
    speed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=[*by, optimizer, "horizon", "speedup", "speedup_lo", "speedup_hi"])
    if len(speed):
        edge = tuned[tuned["at_edge"].astype(bool)][[*by, optimizer, "horizon"]].assign(lr_at_edge=True)
        speed = speed.merge(edge, on=[*by, optimizer, "horizon"], how="left")
        speed["lr_at_edge"] = speed["lr_at_edge"].astype("boolean").fillna(False).astype(bool)
    return speed, fits

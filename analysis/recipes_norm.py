"""Recipe "norm_transfer": runs over (lr, batch size) evaluated at token horizons (Filatov et al., "Optimal
Scaling Needs Optimal Norm", arXiv 2510.03871).

Horizons: every evaluation D > 0 of a constant-lr run, and only the final evaluation (its length) of a
run whose schedule decays, so a store where each (B, D) is its own cosine run works too; restricted to
`horizons` = [min, max] tokens if given, and to horizons evaluated for `min_batches` batch sizes (default:
all). Per (B, D), over seeds averaged per lr: the optimal output norm from a parabola of loss in log2 norm
on the points within `window` octaves of the argmin, and eta* interpolated there; per horizon B* and the
optimal norm there (does it stay constant? the central figure, optimal norm vs D per B); the joint law
log2 eta*(B, D); B*(D) over uncensored B*; and the first horizon at which each constant-lr run reaches
the optimal-norm band.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.norm_transfer import (aligned_horizons, at_horizons, decaying, final_evaluations, first_band_horizon,
                                    fit_bstar, fit_first_band, fit_lr_joint, horizon_bounds, horizon_label,
                                    norm_per_horizon, norm_transfer_summary, optimal_norms, parabola_warnings,
                                    positive_horizons, within_horizons)
from analysis.optimum import optimum_warnings
from analysis.plots import (plot_bstar, plot_loss_vs_norm, plot_loss_vs_norm_per_horizon, plot_lr_vs_batch,
                            plot_norm_vs_step, plot_optimal_norm_vs_horizon)
from analysis.recipe_tools import ci_text, finished_runs, guarded, state_counts, write_figure
from analysis.validate import as_list, require_columns


def norm_transfer(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                  loss: str = "val_loss", norm: str = "norm/param/output", horizon: str = "tokens",
                  lr: str = "optim.lr", batch: str = "run.batch_size", schedule: str = "run.schedule",
                  seed_columns: tuple[str, ...] = ("run.seed", "run.data_seed"), horizons: list | None = None,
                  min_batches: int | None = None, window: float = 1.0, intercept: float | None = None,
                  band_halfwidth: float = 0.2, smooth: float = 0.0, n_boot: int = 500, seed: int = 0,
                  **unknown) -> dict:
    """Norm transfer (Filatov et al.): per (batch, horizon) the optimal output norm, per horizon B* and the
    norm there, the joint law log2 eta*(B, D), B*(D) and the first horizon each run reaches the norm band.

    horizons: [min, max] bounds (null: no bound) on the horizons analysed, in units of the `horizon`
    column (tokens by default), e.g. [131072, 1048576]. min_batches: a
    horizon is analysed when evaluated for at least this many batch sizes (null: every batch size of the
    runs). window: half-width, in octaves of output norm, of the points around the loss argmin that the
    parabola is fitted to (at least 3 are). seed_columns: the run columns (those present) that tell
    seeds apart; losses are averaged over seeds and intervals bootstrap over them. schedule: the column
    saying whether a run's lr decays (then only its final evaluation is a horizon)."""
    if unknown:
        valid = [p for p in inspect.signature(norm_transfer).parameters if p not in ("runs", "curves", "out_dir",
                                                                                    "unknown")]
        raise AnalysisError(f"norm_transfer: unknown option(s) {', '.join(map(repr, sorted(unknown)))}; the options "
                            f"are {', '.join(valid)}")
    check_options(window, min_batches)
    bounds = horizon_bounds(horizons)
    warnings: list[str] = []
    require_columns(curves, [loss, norm, horizon], "norm_transfer (curves)")
    require_columns(runs, [lr, batch], "norm_transfer (runs)")
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    seeds = [c for c in as_list(seed_columns) if c in data.columns]
    table = horizon_table(curves, data, loss, norm, horizon, lr, batch, schedule, seeds, smooth, warnings)
    evaluations = table  # every evaluation D > 0: the first-band crossings read whole trajectories
    table, msg = aligned_horizons(within_horizons(table, bounds), min_batches)
    warnings += [msg] if msg else []
    opt, lr_samples = optimal_norms(table, by=["B", "D"], window=window, seed_col="seed", intercept=intercept,
                                    n_boot=n_boot, seed=seed, empty="keep", return_samples=True)
    warnings += optimum_warnings(opt, ["B", "D"]) + parabola_warnings(opt)
    n_seeds = int(table["seed"].nunique())
    if 2 <= n_seeds <= 3:
        warnings.append(f"the intervals of the optimal norms resample only {n_seeds} seeds (a handful of distinct "
                        "draws): they understate the uncertainty")
    per = norm_per_horizon(opt)
    summary_norm = norm_transfer_summary(per, seed=seed)
    if summary_norm["all_at_edge"]:
        warnings.append("every optimal norm at B* is at the edge of the grid: the optimal-norm summary and band "
                        "rest on bounds")
    joint_samples = lr_samples if n_seeds >= 2 and np.isfinite(lr_samples).any() else None
    fits = {"lr_joint": guarded("log2 eta*(B, D)", lambda: fit_lr_joint(opt, lr_samples=joint_samples,
                                                                        n_boot=n_boot, seed=seed), warnings),
            "bstar": guarded("B*(D)", lambda: fit_bstar(per, n_boot=n_boot, seed=seed), warnings)}
    centre = summary_norm["log2_norm_mean"]
    band = (centre - band_halfwidth, centre + band_halfwidth)
    fits["first_band"] = first_band_fit(evaluations, band, n_boot, seed, warnings)
    figures = draw_figures(table, opt, per, fits, band, curves, data, norm, horizon, lr, batch, out_dir)
    summary = summary_rows(per, fits, summary_norm, n_seeds)
    return {"recipe": "norm_transfer", "runs": counts, "optima": opt, "per_horizon": per, "optimal_norm": summary_norm,
            "band": list(band), "fits": {k_: (f.to_dict() if f else None) for k_, f in fits.items()},
            "figures": figures, "warnings": warnings, "summary": summary}


def check_options(window, min_batches) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0:
        raise AnalysisError(f"norm_transfer: option window={window!r} must be a positive number (octaves of norm)")
    if min_batches is not None and (isinstance(min_batches, bool) or not isinstance(min_batches, int)
                                    or min_batches < 1):
        raise AnalysisError(f"norm_transfer: option min_batches={min_batches!r} must be a whole number >= 1, or null "
                            "(every batch size)")


def horizon_table(curves, runs, loss, norm, horizon, lr, batch, schedule, seeds, smooth, warnings,
                  extra: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (run, horizon D > 0) with columns run_id, D, loss, output_norm, lr, B, seed (the seed
    columns joined; one value with one seed), decays and the `extra` run columns ({column: new name});
    decaying runs keep their final evaluation."""
    extra = extra or {}
    config = [lr, batch, *extra, *seeds, *[c for c in (schedule, "state") if c in runs.columns]]
    table = at_horizons(curves[curves["run_id"].astype(str).isin(runs["run_id"].astype(str))], runs,
                        [loss, norm], config, horizon=horizon, smooth=smooth)
    table = table.rename(columns={loss: "loss", norm: "output_norm", lr: "lr", batch: "B", horizon: "D", **extra})
    table = table[np.isfinite(table["output_norm"]) & (table["output_norm"] > 0)]
    if table.empty:
        raise AnalysisError(f"norm_transfer: no curve rows with both {loss!r} and a positive {norm!r}")
    table = table.assign(seed=table[seeds].astype(str).agg("/".join, axis=1) if seeds else "0")
    table, msg = positive_horizons(table)
    warnings += [msg] if msg else []
    if schedule in table.columns:
        table, msg = final_evaluations(table, schedule)
        warnings += [msg] if msg else []
    table = table.assign(decays=decaying(table[schedule]) if schedule in table.columns else False)
    if table.empty:
        raise AnalysisError(f"norm_transfer: no evaluation at a horizon {horizon} > 0")
    return table.reset_index(drop=True)


def first_band_fit(evaluations: pd.DataFrame, band, n_boot: int, seed: int, warnings: list[str]):
    """The first-band law from the constant-lr runs (a decaying run's norm path is not the paper's)."""
    constant = evaluations[~evaluations["decays"].to_numpy(bool)]
    if constant.empty:
        warnings.append("first horizon in the norm band: no constant-lr runs, not fitted")
        return None
    first = first_band_horizon(constant, band=band)
    n_censored = int((first["status"] == "censored").sum())
    if n_censored:
        warnings.append(f"first horizon in the norm band: {n_censored} run(s) already at or past the band's lower "
                        "edge at their first evaluation left out (censored: the crossing came earlier)")
    return guarded("first horizon in the norm band", lambda: fit_first_band(first, n_boot=n_boot, seed=seed),
                   warnings)


def draw_figures(table, opt, per, fits, band, curves, runs, norm, horizon, lr, batch, out_dir) -> list[str]:
    figures: list[str] = []
    last = per.iloc[-1]
    sel = table[(table["B"] == last["B_opt"]) & (table["D"] == last["D"])]
    row = opt[(opt["B"] == last["B_opt"]) & (opt["D"] == last["D"])].iloc[0]
    write_figure(plot_loss_vs_norm(sel, optimum=row, band=band,
                                   title=f"Loss vs output norm at B*={last['B_opt']:g}, D={horizon_label(last['D'])}"),
                 out_dir, "loss_vs_norm", figures)
    write_figure(plot_loss_vs_norm_per_horizon(table, opt, per_horizon=per), out_dir, "loss_vs_norm_per_horizon",
                 figures)
    write_figure(plot_norm_vs_step(curves, runs, norm, "step" if "step" in curves else horizon, lr, batch), out_dir,
                 "norm_vs_step", figures)
    write_figure(plot_lr_vs_batch(opt, fit=fits["lr_joint"]), out_dir, "lr_vs_batch", figures)
    write_figure(plot_bstar(per, fit=fits["bstar"]), out_dir, "bstar_vs_horizon", figures)
    write_figure(plot_optimal_norm_vs_horizon(opt, per_horizon=per, band=band), out_dir, "optimal_norm_vs_horizon",
                 figures)
    return figures


def summary_rows(per, fits, summary_norm, n_seeds: int) -> list[dict]:
    rows = [{"D": horizon_label(r["D"]), "B*": r["B_opt"], "log2 norm*": round(r["log2_norm_opt"], 3),
             "interval": f"[{r['log2_norm_lo']:.2f}, {r['log2_norm_hi']:.2f}]", "lr*": r["lr_opt"],
             "lr grid": r["lr_grid"], "points": r["n_points"], "seeds": r["n_seeds"],
             "edge": "B* EDGE" if r["b_at_edge"] else ("NORM EDGE" if not r["norm_ok"] else "")}
            for _, r in per.iterrows()]
    for name, f, key in (("log2 eta* ~ log2 B", fits["lr_joint"], "B"), ("log2 eta* ~ log2 D", fits["lr_joint"], "D"),
                         ("B* ~ D^b", fits["bstar"], "b"), ("first band: log2 eta ~ log2 D_first", fits["first_band"],
                                                            "D_first")):
        rows.append({"D": "law", "B*": name, "log2 norm*": ci_text(f, key)})
    excluded = f", {summary_norm['n_excluded']} at the grid edge left out" if summary_norm["n_excluded"] else ""
    rows.append({"D": "all", "B*": "optimal norm", "log2 norm*": f"{summary_norm['log2_norm_mean']:.3f}",
                 "interval": f"sd {summary_norm['log2_norm_sd']:.3f} over {summary_norm['n_horizons']} horizons"
                             f"{excluded}; {n_seeds} seed(s)"})
    return rows

"""Recipes of the training-dynamics laws, usable from an experiment file's ANALYSIS:

- "wd_timescale": tau = 1/(eta lambda S) per run, tau* per (N, D) from a weight-decay (or batch / lr)
  sweep, the law tau* = c (D/N)^m and lambda* at requested (N, D, eta, steps) (Bergsma et al. 2025).
- "schedule_law": the multi-power law (Luo et al. 2025) and the LR-annealing law (Tissue et al. 2024)
  fitted on curves.parquet (step, lr, loss), with the prediction error on a held-out schedule.
- "shared_exponent_speedup": every optimizer's L(D) (or L(N, D)) with shared exponents and
  optimizer-specific multipliers; speedups as multiplier ratios with intervals.
- "curve_collapse": loss curves normalised by final compute and loss; their spread across a sweep
  relative to the seed-to-seed spread (Qiu et al. 2025).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.collapse import curve_collapse as fit_curve_collapse
from analysis.errors import AnalysisError
from analysis.grid import snap_relative
from analysis.plots.training_laws import (plot_curve_collapse, plot_schedule_law, plot_shared_exponent,
                                          plot_wd_timescale)
from analysis.recipe_tools import ci_text, finished_runs, guarded, pick_column, state_counts, write_figure
from analysis.schedule_law import FORMS, fit_schedule_law, schedule_law_curves
from analysis.shared_exponent import fit_shared_exponent, shared_exponent_table
from analysis.validate import as_list, require_columns
from analysis.wd_timescale import fit_wd_timescale, lambda_opt, timescale_table

LOSSES = ("final_val_loss", "best_val_loss", "final_train_loss")


def _done(runs: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    data = finished_runs(runs, warnings)
    return data[data["state"] == "done"] if "state" in data else data


def wd_timescale(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                 lr: str = "optim.lr", wd: str = "optim.weight_decay", steps: str | None = None,
                 n: str = "n_params", d: str = "tokens", loss: str | None = None, by: str | Sequence[str] = (),
                 seed_col: str | None = "run.seed", method: str = "quadratic", k: int = 5, n_boot: int = 500,
                 predict: Sequence[dict] | None = None, seed: int = 0) -> dict:
    """tau* per (N, D, *by) and tau* = c (D/N)^m. steps defaults to the planned run.steps (else the
    summary's steps); D of a diverged run is rescaled to its planned horizon so it groups with its sweep.
    predict: rows {"N", "D", "lr", "steps" or "batch"} at which to report lambda* with an interval."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    loss = pick_column(data, loss, LOSSES, "wd_timescale")
    if steps is None:
        steps = "run.steps" if "run.steps" in data else "steps"
    require_columns(data, [lr, wd, steps, n, d, *as_list(by)], "wd_timescale")
    data = data.copy()
    if steps != "steps" and "steps" in data:  # diverged runs stopped early: D at the planned horizon
        done_steps = pd.to_numeric(data["steps"], errors="coerce").to_numpy(float)
        planned = pd.to_numeric(data[steps], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(done_steps > 0, planned / done_steps, np.nan)
        data[d] = pd.to_numeric(data[d], errors="coerce").to_numpy(float) * scale
    for c in (n, d):
        data[c] = snap_relative(pd.to_numeric(data[c], errors="coerce").to_numpy(float), 1e-2)
    if seed_col is not None and (seed_col not in data or data[seed_col].nunique() < 2):
        seed_col = None
    result: dict = {}

    def run():
        result["optima"], fit = fit_wd_timescale(data, loss, lr=lr, wd=wd, steps=steps, n=n, d=d, by=by,
                                                 seed_col=seed_col, method=method, k=k, n_boot=n_boot, seed=seed,
                                                 diverged_col="diverged" if "diverged" in data else None)
        return fit

    fit = guarded("tau*(D/N)", run, warnings)
    optima = result.get("optima")
    figures: list[str] = []
    if optima is not None:
        write_figure(plot_wd_timescale(timescale_table(data, lr, wd, steps, n, d), optima, fit, loss, n, d), out_dir,
                     "wd_timescale", figures)
    summary = []
    if optima is not None:
        for _, r in optima.iterrows():
            summary.append({"N": r[n], "D": r[d], "D/N": round(float(r["tpp"]), 3), "tau*": r["tau_opt"],
                            "interval": f"[{r['tau_lo']:.3g}, {r['tau_hi']:.3g}]",
                            "flag": "" if r["ok"] else ("EDGE" if r["at_edge"] else "excluded")})
    summary += [{"N": "law", "D": "tau* = c (D/N)^m", "D/N": key, "tau*": ci_text(fit, key)} for key in ("c", "m")]
    lam = []
    if fit is not None and predict:
        for p in predict:
            try:
                est, lo, hi = lambda_opt(fit, p["N"], p["D"], p["lr"], p.get("steps"), batch=p.get("batch"))
            except (KeyError, TypeError) as e:
                raise AnalysisError(f"wd_timescale: predict rows need N, D, lr and steps or batch ({e})") from e
            lam.append({**p, "lambda_opt": float(est), "lambda_lo": float(lo), "lambda_hi": float(hi)})
            summary.append({"N": p["N"], "D": p["D"], "D/N": round(p["D"] / p["N"], 3),
                            "tau*": f"lambda* = {float(est):.3g} [{float(lo):.3g}, {float(hi):.3g}]"})
    return {"recipe": "wd_timescale", "runs": counts,
            "columns": {"lr": lr, "wd": wd, "steps": steps, "N": n, "D": d, "loss": loss, "seed": seed_col},
            "optima": optima, "fit": fit.to_dict() if fit else None, "lambda_opt": lam, "figures": figures,
            "warnings": warnings, "summary": summary}


def _holdout_runs(data: pd.DataFrame, holdout, schedule_col: str | None) -> list[str]:
    ids = data["run_id"].astype(str)
    out = []
    for h in as_list(holdout):
        h = str(h)
        hit = (ids == h).to_numpy().copy()
        if schedule_col and schedule_col in data:
            hit |= (data[schedule_col].astype(str) == h).to_numpy()
        if hit.any():
            out += ids[hit].tolist()
        else:
            raise AnalysisError(f"schedule_law: holdout {h!r} is neither a run id nor a value of "
                                f"{schedule_col!r}")
    return list(dict.fromkeys(out))


def schedule_law(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                 loss: str = "train_loss", step: str = "step", lr: str = "lr", forms: Sequence[str] = FORMS,
                 holdout=None, schedule_col: str | None = "run.schedule", by: str | None = None,
                 decay_factor: float = 0.999, min_frac: float = 0.05, n_boot: int = 100, seed: int = 0) -> dict:
    """Schedule-aware loss laws on the curves of finished runs. holdout: run ids or values of schedule_col
    (e.g. "wsd") whose curves are predicted, not fitted; default: the last run (by id) of each group when
    there are several, so a prediction error on an unseen schedule is always reported. by: fit one law per
    value (e.g. model.width); the laws describe one model size."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = _done(runs, warnings)
    forms = as_list(forms)
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise AnalysisError(f"schedule_law: forms {bad} must be among {', '.join(FORMS)}")
    require_columns(curves, ["run_id", step, lr, loss], "schedule_law (curves)")
    if by is not None:
        require_columns(data, [by], "schedule_law")
    elif "n_params" in data and data["n_params"].nunique() > 1:
        warnings.append(f"runs of {data['n_params'].nunique()} model sizes fitted with one law "
                        "(pass by='model.width' for one law per size)")
    fits, preds, summary = {}, [], []
    figures: list[str] = []
    held_all = _holdout_runs(data, holdout, schedule_col) if holdout is not None else None
    groups = data.groupby(by, sort=True) if by else [("all", data)]
    for key, g in groups:
        ids = g["run_id"].astype(str)
        cur = curves[curves["run_id"].astype(str).isin(set(ids))]
        held = [h for h in held_all if h in set(ids)] if held_all is not None else \
            ([sorted(ids)[-1]] if len(ids) > 1 else [])
        label = f"{by}={key}" if by else "all"
        for form in forms:
            name = f"{form} ({label})" if by else form
            fit = guarded(name, lambda f=form, c=cur, h=held: fit_schedule_law(
                c, f, holdout=h, step=step, lr=lr, loss=loss, decay_factor=decay_factor, min_frac=min_frac,
                n_boot=n_boot, seed=seed), warnings)
            fits[name] = fit
            if fit is None:
                summary.append({"law": name, "parameter": "fit failed"})
                continue
            pred = schedule_law_curves(fit, cur).assign(form=form, group=str(key))
            preds.append(pred)
            tag = f"schedule_law_{form}" + (f"_{key}" if by else "")
            write_figure(plot_schedule_law(pred, fit, title=f"{_TITLES[form]} ({label})"), out_dir, tag, figures)
            for p in fit.params:
                summary.append({"law": name, "parameter": p, "estimate": ci_text(fit, p, ".4g")})
            err = fit.details["prediction_error"]
            summary.append({"law": name, "parameter": "held-out mean |error| / loss",
                            "estimate": f"{100 * err:.3f}% on {', '.join(held)}" if err is not None else
                            "none held out"})
    return {"recipe": "schedule_law", "runs": counts, "columns": {"step": step, "lr": lr, "loss": loss, "by": by},
            "fits": {k: (f.to_dict() if f else None) for k, f in fits.items()},
            "prediction": {k: (f.details["prediction"] if f else None) for k, f in fits.items()},
            "figures": figures, "warnings": warnings, "summary": summary}


_TITLES = {"multi_power": "Multi-power law (Luo et al. 2025)", "annealing": "LR-annealing law (Tissue et al. 2024)"}


def _best_lr(data: pd.DataFrame, cell: list[str], lr: str, loss: str, warnings: list[str]) -> pd.DataFrame:
    """Per cell (optimizer, D[, N]) the rows of the lr with the lowest seed-mean loss; edge choices warned."""
    keep, edges = [], []
    for key, g in data.groupby(cell, sort=True, dropna=False):
        means = g.groupby(lr)[loss].mean().dropna()
        if means.empty:
            continue
        best = means.idxmin()
        keep.append(g[g[lr] == best])
        if len(means) >= 3 and best in (means.index.min(), means.index.max()):
            edges.append(", ".join(f"{c}={v}" for c, v in zip(cell, key if isinstance(key, tuple) else (key,))))
    if edges:
        warnings.append(f"best {lr} at the edge of its grid for {len(edges)} cell(s) (e.g. {edges[0]}): those "
                        "losses are upper bounds")
    return pd.concat(keep) if keep else data.iloc[:0]


def shared_exponent_speedup(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                            optimizer: str = "optim.name", d: str = "tokens", n: str | None = None,
                            loss: str | None = None, baseline: str = "adamw", lr: str | None = "optim.lr",
                            n_boot: int = 500, seed: int = 0) -> dict:
    """Shared-exponent L(D) (or L(N, D) with n="n_params") over the optimizers of finished runs; the
    speedup of each over the baseline as a data multiplier k = (B_base / B_o)^(1/beta) with an interval.
    When the runs sweep `lr` within an (optimizer, D[, N]) cell, only the best lr's runs (lowest seed-mean
    loss) enter the law: the comparison is between tuned optimizers."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = _done(runs, warnings)
    loss = pick_column(data, loss, LOSSES, "shared_exponent_speedup")
    require_columns(data, [optimizer, d] + ([n] if n else []), "shared_exponent_speedup")
    cell = [optimizer, d] + ([n] if n else [])
    if lr is not None and lr in data and data.groupby(cell, dropna=False)[lr].nunique().max() > 1:
        before = len(data)
        data = _best_lr(data, cell, lr, loss, warnings)
        warnings.append(f"{lr} tuned per ({', '.join(cell)}): {len(data)} of {before} runs at the best {lr} kept")
    fit = guarded("shared-exponent law", lambda: fit_shared_exponent(data, optimizer, d, loss, n=n, baseline=baseline,
                                                                     n_boot=n_boot, seed=seed), warnings)
    figures: list[str] = []
    table = None
    summary = []
    if fit is not None:
        table = shared_exponent_table(fit)
        write_figure(plot_shared_exponent(data, fit, optimizer, d, loss), out_dir, "shared_exponent_speedup", figures)
        summary = [{"optimizer": r.optimizer, "speedup (data multiplier)": ci_text(fit, f"speedup[{r.optimizer}]")
                    if not r.baseline else "1 (baseline)",
                    "B_o / B_baseline": ci_text(fit, f"multiplier_ratio[{r.optimizer}]") if not r.baseline else "1"}
                   for r in table.itertuples()]
        summary += [{"optimizer": "shared", "speedup (data multiplier)": f"{key} = {ci_text(fit, key, '.4g')}"}
                    for key in ("E", "beta", "alpha") if key in fit.params]
    else:
        summary = [{"optimizer": "all", "speedup (data multiplier)": "fit failed"}]
    return {"recipe": "shared_exponent_speedup", "runs": counts,
            "columns": {"optimizer": optimizer, "D": d, "N": n, "loss": loss, "lr": lr}, "baseline": baseline,
            "speedups": table, "fit": fit.to_dict() if fit else None, "figures": figures, "warnings": warnings,
            "summary": summary}


def curve_collapse(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                   group: str | Sequence[str] = "model.width", seed_col: str | None = "run.seed", x: str = "tokens",
                   loss: str = "train_loss", n: str | None = "n_params", irreducible: float | str = "fit",
                   x_min: float = 0.1, x_max: float = 0.95, consistent_below: float = 2.0, n_boot: int = 200,
                   seed: int = 0) -> dict:
    """Normalised loss curves of finished runs, one group per value of `group` (seeds within it), and
    their spread relative to the seed-to-seed spread."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = _done(runs, warnings)
    require_columns(curves, ["run_id", x, loss], "curve_collapse (curves)")
    cur = curves[curves["run_id"].astype(str).isin(set(data["run_id"].astype(str)))]
    result: dict = {}

    def run():
        result["table"], fit = fit_curve_collapse(cur, data, group, seed_col, x=x, loss=loss, n=n,
                                                  irreducible=irreducible, x_min=x_min, x_max=x_max,
                                                  consistent_below=consistent_below, n_boot=n_boot, seed=seed)
        return fit

    fit = guarded("curve collapse", run, warnings)
    figures: list[str] = []
    if fit is not None:
        write_figure(plot_curve_collapse(result["table"], fit), out_dir, "curve_collapse", figures)
        summary = [{"quantity": k, "estimate": ci_text(fit, k, ".4g")} for k in fit.params]
        summary.append({"quantity": "verdict", "estimate": ("consistent" if fit.details["consistent"] else
                                                            "NOT consistent") +
                        (" (supercollapse: Δ < σ)" if fit.details["supercollapse"] else "")})
    else:
        summary = [{"quantity": "collapse", "estimate": "fit failed"}]
    return {"recipe": "curve_collapse", "runs": counts, "columns": {"group": as_list(group), "seed": seed_col, "x": x,
                                                                    "loss": loss, "N": n},
            "table": result.get("table"), "fit": fit.to_dict() if fit else None, "figures": figures,
            "warnings": warnings, "summary": summary}

"""Recipes "chinchilla" (Approach 3 on finished runs), "isoflop" (Approach 2) and "critical_batch"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.chinchilla import compute_optimal_table, fit_chinchilla
from analysis.critical_batch import fit_critical_batch, steps_to_target
from analysis.isoflop import fit_approach2
from analysis.plots import plot_chinchilla_fit, plot_isoflop
from analysis.recipe_tools import ci_text, finished_runs, guarded, pick_column, state_counts, write_figure
from analysis.validate import require_columns


def _nd_loss(runs, n, d, loss, warnings):
    data = finished_runs(runs, warnings)
    data = data[data["state"] == "done"] if "state" in data else data
    loss = pick_column(data, loss, ("final_val_loss", "best_val_loss", "final_train_loss"), "chinchilla")
    require_columns(data, [n, d], "chinchilla")
    return data[np.isfinite(data[loss].to_numpy(float))], loss


def chinchilla(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
               n: str = "n_params", d: str = "tokens", loss: str | None = None, starts="epoch", n_boot: int = 1000,
               budgets=(1e18, 1e19, 1e20, 1e21), seed: int = 0) -> dict:
    """Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta on finished runs, and the compute-optimal
    N and D at each of `budgets`; loss defaults to final_val_loss, else best_val_loss, else final_train_loss."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data, loss = _nd_loss(runs, n, d, loss, warnings)
    fit = guarded("L(N, D)", lambda: fit_chinchilla(data, n, d, loss, starts=starts, n_boot=n_boot, seed=seed),
                  warnings)
    figures: list[str] = []
    out = {"recipe": "chinchilla", "runs": counts, "columns": {"N": n, "D": d, "loss": loss}, "warnings": warnings,
           "figures": figures, "fit": fit.to_dict() if fit else None}
    if fit is None:
        out["summary"] = [{"quantity": "L(N, D)", "estimate": "fit failed"}]
        return out
    table = compute_optimal_table(fit, budgets)
    out["compute_optimal"] = table
    write_figure(plot_chinchilla_fit(data, fit, n, d, loss), out_dir, "chinchilla_fit", figures)
    out["summary"] = [{"quantity": k, "estimate": ci_text(fit, k, ".4g")} for k in
                      ("E", "A", "B", "alpha", "beta", "N_opt_exponent")] + \
                     [{"quantity": f"N_opt(C={r.C:.0e})", "estimate": f"{r.N_opt:.3g}"} for r in table.itertuples()]
    return out


def isoflop(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *, n: str = "n_params",
            d: str = "tokens", compute: str | None = None, loss: str | None = None, n_boot: int = 1000,
            exclude_unstable: bool = True, seed: int = 0) -> dict:
    """Chinchilla Approach 2: per compute budget (C = 6 N D unless `compute` names a column) the vertex of
    the IsoFLOP parabola, then N_opt ~ C^a and D_opt ~ C^b over the budgets whose vertex is trustworthy
    (exclude_unstable=false keeps budgets whose bootstrap vertices leave the sampled N, warned)."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data, loss = _nd_loss(runs, n, d, loss, warnings)
    if compute is None:
        data = data.assign(C=6.0 * data[n].astype(float) * data[d].astype(float))
        compute = "C"
    result = {}

    def run():
        result["table"], fit = fit_approach2(data, n, loss, compute, n_boot=n_boot, seed=seed,
                                             exclude_unstable=exclude_unstable)
        return fit

    fit = guarded("IsoFLOP (Approach 2)", run, warnings)
    figures: list[str] = []
    write_figure(plot_isoflop(data, n, loss, compute, result.get("table")), out_dir, "isoflop", figures)
    summary = [{"quantity": k, "estimate": ci_text(fit, k)} for k in ("N_exponent", "D_exponent")]
    return {"recipe": "isoflop", "runs": counts, "vertices": result.get("table"), "fit": fit.to_dict() if fit else None,
            "figures": figures, "warnings": warnings, "summary": summary}


def critical_batch(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                   target: float, loss: str = "val_loss", batch: str = "run.batch_size", by: str | None = None,
                   b0: float | None = 256.0, n_boot: int = 1000, seed: int = 0) -> dict:
    """Steps to reach `target` loss per run (the best run per batch size), then S(B) = a + b/B per value of
    `by` (e.g. model.width): S_min, B_noise and Zhang et al.'s CBS = 1.2 b0 + b/(5a), b0 in the units
    of `batch` (256 sequences in the paper; null: the smallest batch tried)."""
    warnings: list[str] = []
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    require_columns(data, [batch] + ([by] if by else []), "critical_batch")
    steps = steps_to_target(curves, float(target), loss=loss)
    steps["run_id"] = steps["run_id"].astype(str)
    table = steps.merge(data.assign(run_id=data["run_id"].astype(str)), on="run_id")
    never = int((~table["reached"]).sum())
    if never:
        warnings.append(f"{never} run(s) never reached loss {target}")
    fits = {}
    for key, g in (table.groupby(by) if by else [("all", table)]):
        best = g.groupby(batch)["steps"].min().reset_index()  # best lr per batch size
        fits[str(key)] = guarded(f"critical batch ({key})", lambda b=best: fit_critical_batch(
            b, batch, "steps", b0=b0, n_boot=n_boot, seed=seed), warnings)
    summary = [{"group": k, "CBS (Zhang)": ci_text(f, "CBS_zhang"), "B_noise": ci_text(f, "B_noise")}
               for k, f in fits.items()]
    return {"recipe": "critical_batch", "runs": counts, "target": target, "steps": table[["run_id", batch, "steps"]],
            "fits": {k: (f.to_dict() if f else None) for k, f in fits.items()}, "figures": [], "warnings": warnings,
            "summary": summary}

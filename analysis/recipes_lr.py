"""Recipe "lr_transfer": learning rate x width sweeps under several parametrizations (SP, muP, ...).

Per (parametrization, width): the optimal learning rate (quadratic in log2 lr around the argmin, seeds
averaged, edge flags, bootstrap interval); per parametrization: eta*(width) = a width^b with a
bootstrap CI that also propagates each optimum's interval. A parametrization transfers the learning
rate across width when the CI of b contains 0 (muP should; SP should not, b ~ -1 for hidden layers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.optimum import find_optima, optimum_warnings
from analysis.plots import plot_loss_vs_lr, plot_optimal_lr_vs_width
from analysis.powerlaw import fit_power_law
from analysis.recipe_tools import finished_runs, guarded, pick_column, state_counts, write_figure
from analysis.validate import require_columns


def lr_transfer(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                x: str = "optim.lr", y: str | None = None, width: str = "model.width", kind: str = "param.kind",
                seed_col: str | None = "run.seed", method: str = "quadratic", k: int = 5, n_boot: int = 1000,
                seed: int = 0) -> dict:
    """Optimal lr per (kind, width), eta*(width) laws per kind, two figures. y defaults to
    final_val_loss, else best_val_loss, else final_train_loss."""
    warnings: list[str] = []
    require_columns(runs, [x, width, kind], "lr_transfer")
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    y = pick_column(data, y, ("final_val_loss", "best_val_loss", "final_train_loss"), "lr_transfer")
    if seed_col is not None and (seed_col not in data or data[seed_col].nunique() < 2):
        seed_col = None  # one seed: bootstrap over the fitted points instead
    optima, samples = find_optima(data, x, y, [kind, width], method=method, k=k, seed_col=seed_col,
                                  diverged_col="diverged" if "diverged" in data else None, n_boot=n_boot, seed=seed,
                                  empty="keep", return_samples=True)
    warnings += optimum_warnings(optima, [kind, width])
    fits = {}
    for kv, g in optima.groupby(kind, sort=True):
        ok = g[g["ok"]]
        if len(ok) < len(g):
            warnings.append(f"{kind}={kv}: {len(g) - len(ok)} edge/concave optimum(s) excluded from the width law")
        fit = guarded(f"eta*(width) for {kind}={kv}",
                      lambda ok=ok: _law(ok, samples, width, n_boot, seed), warnings)
        if fit is not None:
            lo, hi = fit.ci.get("b", (np.nan, np.nan))
            fit.details["transfers_across_width"] = bool(np.isfinite(lo) and lo <= 0 <= hi)
            fits[kv] = fit
    figures: list[str] = []
    write_figure(plot_loss_vs_lr(data, x, y, width, kind, optima, title="Loss vs learning rate"), out_dir,
                 "loss_vs_lr", figures)
    write_figure(plot_optimal_lr_vs_width(optima, width, kind, fits), out_dir, "optimal_lr_vs_width", figures)
    summary = [{kind: r[kind], width: r[width], "lr*": r["x_opt"], "interval": _interval_text(r),
                "loss*": r["y_opt"], "edge": "EDGE" if r["at_edge"] else "", "diverged": r["n_diverged"]}
               for _, r in optima.iterrows()]
    for kv, f in fits.items():
        lo, hi = f.ci.get("b", (np.nan, np.nan))
        summary.append({kind: kv, width: "law", "lr*": f"width^{f['b']:.3f}", "interval": f"[{lo:.3f}, {hi:.3f}]",
                        "loss*": "", "edge": "transfers" if f.details["transfers_across_width"] else "",
                        "diverged": ""})
    return {"recipe": "lr_transfer", "columns": {"x": x, "y": y, "width": width, "kind": kind, "seed": seed_col},
            "runs": counts, "method": method, "k": k, "optima": optima,
            "laws": {str(k_): f.to_dict() for k_, f in fits.items()},
            "figures": figures, "warnings": warnings, "summary": summary}


def _law(ok: pd.DataFrame, samples: np.ndarray, width: str, n_boot: int, seed: int):
    if len(ok) < 3:
        raise AnalysisError(f"{len(ok)} usable width(s) (interior optima), need at least 3")
    return fit_power_law(ok.reset_index(drop=True), width, "x_opt", n_boot=n_boot, seed=seed,
                         y_samples=samples[:, ok.index.to_numpy()], name="lr_vs_width")


def _interval_text(r) -> str:
    if not np.isfinite(r["x_opt"]):
        return "no finite points"
    if r["at_edge"]:
        return f">= {r['x_opt']:.3g} (bound)" if r["edge_side"] == "high" else f"<= {r['x_opt']:.3g} (bound)"
    return f"[{r['x_lo']:.3g}, {r['x_hi']:.3g}]"

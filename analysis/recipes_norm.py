"""Recipe "norm_transfer": constant-lr runs over (lr, batch size) evaluated at many token horizons.

Filatov et al. (arXiv 2510.03871): per (B, D) the optimal output norm from a parabola of loss in
log2 norm; per horizon B* and the optimal norm there (does it stay constant?); the joint law
log2 eta*(B, D); B*(D); and the first horizon at which each run reaches the optimal-norm band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.norm_transfer import (at_horizons, first_band_horizon, fit_bstar, fit_first_band, fit_lr_joint,
                                    norm_per_horizon, norm_transfer_summary, optimal_norms)
from analysis.optimum import optimum_warnings
from analysis.plots import plot_bstar, plot_loss_vs_norm, plot_lr_vs_batch, plot_norm_vs_step
from analysis.recipe_tools import ci_text, finished_runs, guarded, state_counts, write_figure
from analysis.validate import require_columns


def norm_transfer(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path | None = None, *,
                  loss: str = "val_loss", norm: str = "norm/param/output", horizon: str = "tokens",
                  lr: str = "optim.lr", batch: str = "run.batch_size", k: int = 7, intercept: float | None = None,
                  band_halfwidth: float = 0.2, smooth: float = 0.0, n_boot: int = 500, seed: int = 0) -> dict:
    """Norm transfer (Filatov et al.): per (batch, horizon) the optimal output norm, per horizon B* and the
    norm there, the joint law log2 eta*(B, D), B*(D) and the first horizon each run reaches the norm band."""
    warnings: list[str] = []
    require_columns(curves, [loss, norm, horizon], "norm_transfer (curves)")
    require_columns(runs, [lr, batch], "norm_transfer (runs)")
    counts = state_counts(runs)
    data = finished_runs(runs, warnings)
    table = at_horizons(curves[curves["run_id"].astype(str).isin(data["run_id"].astype(str))], data,
                        [loss, norm], [lr, batch], horizon=horizon, smooth=smooth)
    table = table.rename(columns={loss: "loss", norm: "output_norm", lr: "lr", batch: "B", horizon: "D"})
    table = table[np.isfinite(table["output_norm"]) & (table["output_norm"] > 0)]
    if table.empty:
        raise AnalysisError(f"norm_transfer: no curve rows with both {loss!r} and a positive {norm!r}")
    opt = optimal_norms(table, by=["B", "D"], k=k, intercept=intercept, n_boot=n_boot, seed=seed, empty="keep")
    warnings += optimum_warnings(opt, ["B", "D"])
    per = norm_per_horizon(opt)
    summary_norm = norm_transfer_summary(per, seed=seed)
    fits = {"lr_joint": guarded("log2 eta*(B, D)", lambda: fit_lr_joint(opt, n_boot=n_boot, seed=seed), warnings),
            "bstar": guarded("B*(D)", lambda: fit_bstar(per, n_boot=n_boot, seed=seed), warnings)}
    centre = summary_norm["log2_norm_mean"]
    band = (centre - band_halfwidth, centre + band_halfwidth)
    first = first_band_horizon(table, band=band)
    fits["first_band"] = guarded("first horizon in the norm band", lambda: fit_first_band(first, n_boot=n_boot,
                                                                                           seed=seed), warnings)
    figures: list[str] = []
    last = per.iloc[-1]
    sel = table[(table["B"] == last["B_opt"]) & (table["D"] == last["D"])]
    row = opt[(opt["B"] == last["B_opt"]) & (opt["D"] == last["D"])].iloc[0]
    write_figure(plot_loss_vs_norm(sel, optimum=row, band=band,
                                   title=f"Loss vs output norm at B*={last['B_opt']:g}, D=2^{np.log2(last['D']):.0f}"),
                 out_dir, "loss_vs_norm", figures)
    write_figure(plot_norm_vs_step(curves, data, norm, "step" if "step" in curves else horizon, lr, batch), out_dir,
                 "norm_vs_step", figures)
    write_figure(plot_lr_vs_batch(opt, fit=fits["lr_joint"]), out_dir, "lr_vs_batch", figures)
    write_figure(plot_bstar(per, fit=fits["bstar"]), out_dir, "bstar_vs_horizon", figures)
    summary = [{"D": f"2^{np.log2(r['D']):.1f}", "B*": r["B_opt"], "log2 norm*": round(r["log2_norm_opt"], 3),
                "interval": f"[{r['log2_norm_lo']:.2f}, {r['log2_norm_hi']:.2f}]", "lr*": r["lr_opt"],
                "edge": "B* EDGE" if r["b_at_edge"] else ("NORM EDGE" if not r["norm_ok"] else "")}
               for _, r in per.iterrows()]
    for name, f, key in (("log2 eta* ~ log2 B", fits["lr_joint"], "B"), ("log2 eta* ~ log2 D", fits["lr_joint"], "D"),
                         ("B* ~ D^b", fits["bstar"], "b"), ("first band: log2 eta ~ log2 D_first", fits["first_band"],
                                                            "D_first")):
        summary.append({"D": "law", "B*": name, "log2 norm*": ci_text(f, key)})
    summary.append({"D": "all", "B*": "optimal norm", "log2 norm*": f"{summary_norm['log2_norm_mean']:.3f}",
                    "interval": f"sd {summary_norm['log2_norm_sd']:.3f} over {summary_norm['n_horizons']} horizons"})
    return {"recipe": "norm_transfer", "runs": counts, "optima": opt, "per_horizon": per, "optimal_norm": summary_norm,
            "band": list(band), "fits": {k_: (f.to_dict() if f else None) for k_, f in fits.items()},
            "figures": figures, "warnings": warnings, "summary": summary}

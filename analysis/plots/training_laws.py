"""Figures of the training-dynamics laws: the AdamW timescale tau*(D/N), schedule-aware loss curves
(multi-power / LR-annealing law) with a held-out schedule, the shared-exponent optimizer comparison, and
the curve collapse."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit import Fit
from analysis.plots.style import colours, fmt_num, new_figure
from analysis.shared_exponent import shared_exponent_table


def plot_wd_timescale(table: pd.DataFrame, optima: pd.DataFrame, fit: Fit | None, loss: str = "final_val_loss",
                      n: str = "n_params", d: str = "tokens", title: str = "AdamW timescale τ = 1/(ηλS)"):
    """Left: loss vs tau per (N, D) (colour by tokens per parameter), optima as stars (hollow: edge or
    concave). Right: tau* vs D/N with the fitted power law tau* = c (D/N)^m."""
    fig, axes = new_figure(2)
    ax = axes[0][0]
    cmap = colours([_sig3(v) for v in optima["tpp"].to_numpy(float)])
    for (nv, dv), g in table.groupby([n, d], sort=True):
        col = cmap.get(min(cmap, key=lambda v: abs(np.log(v) - np.log(float(dv) / float(nv)))))
        ok = np.isfinite(g[loss].to_numpy(float))
        mean = g[ok].groupby("tau")[loss].mean()
        ax.plot(mean.index, mean.values, "o-", ms=3, lw=1, color=col)
    for _, r in optima.iterrows():
        if not np.isfinite(r["tau_opt"]):
            continue
        col = cmap.get(min(cmap, key=lambda v: abs(np.log(v) - np.log(float(r["tpp"])))))
        ax.plot(r["tau_opt"], r["loss_opt"], "*", ms=12, color=col, mec="black",
                mfc=col if r["ok"] else "white", zorder=5)
    for v, c in cmap.items():
        ax.plot([], [], "-", color=c, label=f"D/N = {fmt_num(v)}")
    ax.set_xscale("log")
    ax.set_xlabel("τ (epochs of the run)")
    ax.set_ylabel(loss)
    ax.set_title(title + "\n★ τ* per (N, D) (hollow: edge / concave)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    ok = optima["ok"].to_numpy(bool)
    fin = np.isfinite(optima["tau_opt"].to_numpy(float))
    good = optima[ok & fin]
    yerr = [good["tau_opt"] - good["tau_lo"], good["tau_hi"] - good["tau_opt"]]
    ax.errorbar(good["tpp"], good["tau_opt"], yerr=yerr, fmt="o", color="tab:blue", capsize=3, label="τ* (interior)")
    bad = optima[~ok & fin]
    ax.plot(bad["tpp"], bad["tau_opt"], "o", color="tab:blue", mfc="white", label="edge / concave (excluded)")
    if fit is not None:
        x = np.geomspace(optima["tpp"].min() / 1.5, optima["tpp"].max() * 1.5, 50)
        ax.plot(x, fit["c"] * x ** fit["m"], "-", color="tab:red",
                label=f"τ* = {fit['c']:.3g} (D/N)^{fit['m']:.3f}" + _ci_suffix(fit, "m"))
        if fit.samples is not None:
            reps = fit.samples["c"].to_numpy()[:, None] * x[None] ** fit.samples["m"].to_numpy()[:, None]
            lo, hi = np.nanquantile(reps, [0.025, 0.975], axis=0)
            ax.fill_between(x, lo, hi, color="tab:red", alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per parameter D/N")
    ax.set_ylabel("optimal timescale τ*")
    ax.set_title("τ*(D/N) (Bergsma et al. 2025)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def plot_schedule_law(pred: pd.DataFrame, fit: Fit | None = None, title: str = "Schedule-aware loss law"):
    """Left: observed loss (dots) and the law's curve per run; held-out runs dashed and named "held out".
    Right: the learning-rate schedules."""
    fig, axes = new_figure(2)
    runs = list(dict.fromkeys(pred["run"]))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    ax, ax2 = axes[0][0], axes[0][1]
    for i, r in enumerate(runs):
        g = pred[pred["run"] == r]
        c = palette[i % len(palette)]
        held = (g["role"] == "holdout").any()
        ax.plot(g["step"], g["loss"], ".", ms=2.5, color=c, alpha=0.5)
        ax.plot(g["step"], g["pred"], "--" if held else "-", color=c, lw=1.4,
                label=f"{r}" + (" (held out)" if held else ""))
        ax2.plot(g["step"], g["lr"], "--" if held else "-", color=c, lw=1.2, label=r)
    lo, hi = np.nanquantile(pred["loss"], [0.0, 0.9]) if len(pred) else (0, 1)
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    sub = title
    if fit is not None:
        err = fit.details.get("prediction_error")
        sub += f"\n{fit.name.removeprefix('schedule_law_')}: R² = {fit.r2:.4f}" + \
            (f", held-out mean rel. error {100 * err:.2f}%" if err is not None else ", no held-out schedule")
    ax.set_title(sub, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate η")
    ax2.set_title("schedules", fontsize=9)
    ax2.grid(alpha=0.3)
    return fig


def plot_shared_exponent(df: pd.DataFrame, fit: Fit, optimizer: str = "optim.name", d: str = "tokens",
                         loss: str = "final_val_loss", title: str = "Optimizers with a shared exponent"):
    """Left: L - E vs D per optimizer (log-log) with the shared-exponent curves E + B (k_o D)^-beta
    (parallel lines). Right: each optimizer's data speedup k_o over the baseline with its interval."""
    fig, axes = new_figure(2)
    ax = axes[0][0]
    p = fit.params
    opts = fit.details["optimizers"]
    palette = ["black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    n_col = fit.details["columns"].get("N")
    for i, o in enumerate(opts):
        g = df[df[optimizer].astype(str) == o]
        c = palette[i % len(palette)]
        Dv, Lv = g[d].to_numpy(float), g[loss].to_numpy(float)
        if n_col and "A" in p:  # show the data part only: subtract the size term
            Lv = Lv - p["A"] * g[n_col].to_numpy(float) ** -p["alpha"]
        ax.plot(Dv, Lv - p["E"], "o", ms=4, color=c, alpha=0.7)
        k = 1.0 if o == fit.details["baseline"] else p[f"speedup[{o}]"]
        x = np.geomspace(np.nanmin(df[d].to_numpy(float)), np.nanmax(df[d].to_numpy(float)), 40)
        ax.plot(x, p["B"] * (k * x) ** -p["beta"], "-", color=c, lw=1.3,
                label=f"{o}" + (" (baseline)" if o == fit.details["baseline"] else f": k = {k:.3g}"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"data D ({d})")
    ax.set_ylabel("L − E" + (" − A N^−α" if n_col and "A" in p else ""))
    ax.set_title(title + f"\nE = {p['E']:.3g}, β = {p['beta']:.3f}" + _ci_suffix(fit, "beta"), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    tab = shared_exponent_table(fit)
    y = np.arange(len(tab))
    err = np.array([tab["speedup"] - tab["speedup_lo"], tab["speedup_hi"] - tab["speedup"]], float)
    err = np.where(np.isfinite(err), err, 0.0)
    ax.errorbar(tab["speedup"], y, xerr=err, fmt="o", color="tab:blue", capsize=4)
    ax.axvline(1.0, color="black", lw=1, ls="--")
    ax.set_yticks(y, tab["optimizer"])
    ax.set_xlabel(f"data speedup over {fit.details['baseline']}  k = (B_base / B_o)^(1/β)")
    ax.set_title("speedup (95% bootstrap interval)", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def plot_curve_collapse(table: pd.DataFrame, fit: Fit, title: str = "Loss-curve collapse"):
    """Left: seed-mean normalised curves l(x) per group (sequential colours). Right: spread across groups
    Delta(x), seed-to-seed spread sigma(x) and the seed-noise floor of Delta."""
    fig, axes = new_figure(2)
    ax = axes[0][0]
    groups = fit.details["groups"]
    cmap = colours(range(len(groups)))
    for i, gname in enumerate(groups):
        ax.plot(table["x"], table[gname], "-", color=cmap[i], lw=1.5, label=gname)
    ax.set_xlabel("compute fraction x = C / C_T")
    ax.set_ylabel("normalised loss (L − L0) / (L_T − L0)")
    ax.set_yscale("log")
    ax.set_title(title + f"\nL0 = {fit['L0']:.4g}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    ax.plot(table["x"], table["delta"], "-", color="tab:red", lw=1.5, label="Δ(x): spread across groups")
    ax.plot(table["x"], table["sigma"], "-", color="tab:blue", lw=1.5, label="σ(x): seed-to-seed spread")
    ax.plot(table["x"], table["floor"], ":", color="tab:blue", lw=1.2, label="seed-noise floor of Δ")
    ax.set_yscale("log")
    ax.set_xlabel("compute fraction x")
    ax.set_ylabel("standard deviation of l(x)")
    verdict = "consistent" if fit.details.get("consistent") else "NOT consistent"
    ax.set_title(f"Δ/σ = {fit['collapse_ratio']:.2f}" + _ci_suffix(fit, "collapse_ratio") +
                 f", Δ/floor = {fit['excess_ratio']:.2f} ({verdict})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def _sig3(v: float) -> float:
    return float(f"{v:.3g}")


def _ci_suffix(fit: Fit, key: str) -> str:
    lo, hi = fit.ci.get(key, (np.nan, np.nan)) if fit.ci else (np.nan, np.nan)
    return f" [{lo:.3g}, {hi:.3g}]" if lo is not None and np.isfinite(lo) else ""

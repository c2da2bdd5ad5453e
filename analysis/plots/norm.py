"""Norm-transfer figures (Filatov et al., arXiv 2510.03871): loss vs output norm coloured by learning rate
(one group, or one panel per horizon); norm vs step; the optimal norm vs horizon, one line per batch size."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from analysis.plots.style import CMAP, colours, fmt_num, log2_axis, new_figure


def plot_loss_vs_norm(table: pd.DataFrame, norm: str = "output_norm", loss: str = "loss", lr: str = "lr",
                      optimum: dict | pd.Series | None = None, band: tuple[float, float] | None = None,
                      title: str = "Loss vs output norm"):
    """Scatter of loss against the output norm (log2 x) coloured by log2 lr, with the fitted parabola
    (over the fitted points' span when the row has log2_norm_fit_lo/hi) and the optimum (dashed) when
    `optimum` (a row of optimal_norms) is given; optional norm band."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    l2 = np.log2(table[lr].to_numpy(float))
    sc = ax.scatter(table[norm], table[loss], c=l2, cmap=CMAP, norm=Normalize(l2.min(), l2.max()), s=28,
                    edgecolors="black", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label=f"log2 {lr}")
    if optimum is not None:
        a, b, c = optimum.get("coef_a"), optimum.get("coef_b"), optimum.get("coef_c")
        if a is not None and np.isfinite(a):
            lo, hi = optimum.get("log2_norm_fit_lo", np.nan), optimum.get("log2_norm_fit_hi", np.nan)
            if not (lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi)):
                lo, hi = np.log2(table[norm].min()), np.log2(table[norm].max())
            u = np.linspace(lo, hi, 100)
            ax.plot(2.0**u, a * u**2 + b * u + c, "-", color="gray", lw=1, label="parabola fit")
        ax.axvline(optimum["norm_opt"], ls="--", color="black", lw=1,
                   label=f"optimum: log2 norm = {optimum['log2_norm_opt']:.2f}")
    if band is not None:
        ax.axvspan(2.0 ** band[0], 2.0 ** band[1], color="orange", alpha=0.15, label="optimal-norm band")
    log2_axis(ax, "x")
    ax.set_xlabel(f"output norm ({norm}, RMS→∞)")
    ax.set_ylabel(loss)
    lo, hi = np.nanquantile(table[loss], [0.0, 0.9])
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_loss_vs_norm_per_horizon(table: pd.DataFrame, optima: pd.DataFrame, norm: str = "output_norm",
                                  loss: str = "loss", lr: str = "lr", batch: str = "B", horizon: str = "D",
                                  seed: str = "seed", per_horizon: pd.DataFrame | None = None):
    """One panel per horizon (the paper's Figs. 1a and 2a): loss against the output norm of every (lr, B)
    point, seeds averaged, coloured by log2 lr and joined per batch size; each batch size's optimum marked
    (a star, hollow at the edge of the grid), and B*'s optimal norm dashed when per_horizon is given."""
    keys = [batch, horizon, lr]
    points = (table.assign(_u=np.log2(table[norm].to_numpy(float))).groupby(keys, as_index=False)
              .agg(**{loss: (loss, "mean"), "_u": ("_u", "mean")}))
    horizons = sorted(points[horizon].unique())
    fig, axes = new_figure(len(horizons), width=4.2, height=3.8, sharey=False)
    l2 = np.log2(points[lr].to_numpy(float))
    scale = Normalize(l2.min(), l2.max())
    for ax, D in zip(axes[0], horizons):
        at = points[points[horizon] == D]
        for _, g in at.groupby(batch):
            g = g.sort_values("_u")
            ax.plot(2.0 ** g["_u"], g[loss], "-", color="gray", lw=0.6, alpha=0.6)
        sc = ax.scatter(2.0 ** at["_u"], at[loss], c=np.log2(at[lr]), cmap=CMAP, norm=scale, s=18,
                        edgecolors="black", linewidths=0.2)
        best = optima[optima[horizon] == D]
        inner = best[best["ok"].astype(bool)] if "ok" in best else best
        ax.scatter(inner["norm_opt"], inner["loss_opt"], marker="*", s=90, color="red", zorder=3, label="optimum per B")
        edge = best.drop(inner.index)
        ax.scatter(edge["norm_opt"], edge["loss_opt"], marker="*", s=90, facecolors="white", edgecolors="red", zorder=3)
        if per_horizon is not None:
            row = per_horizon[per_horizon[horizon] == D]
            if len(row):
                ax.axvline(2.0 ** float(row["log2_norm_opt"].iloc[0]), ls="--", color="black", lw=1,
                           label=f"B* = {fmt_num(row['B_opt'].iloc[0])}")
        log2_axis(ax, "x")
        lo, hi = np.nanquantile(at[loss], [0.0, 0.75])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi)
        ax.set(title=f"{horizon} = 2^{np.log2(D):.0f}", xlabel=f"output norm ({norm})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(loss)
    fig.colorbar(sc, ax=axes[0][-1], label=f"log2 {lr}")
    return fig


def _spread(values, k: int) -> list:
    """Up to k values evenly spread over the sorted distinct values (ends included)."""
    vals = sorted(set(values))
    if len(vals) <= k:
        return vals
    return [vals[i] for i in np.unique(np.round(np.linspace(0, len(vals) - 1, k)).astype(int))]


def plot_norm_vs_step(curves: pd.DataFrame, runs: pd.DataFrame, norm: str = "norm/param/output", x: str = "step",
                      lr: str = "optim.lr", panel: str | None = "run.batch_size", max_lrs: int = 6,
                      max_panels: int = 4, title: str = "Output norm vs step"):
    """log2-log2 norm against step (paper Fig. 1b): one panel per `panel` value (up to max_panels,
    spread over the range) and one line per learning rate (up to max_lrs), coloured by log2 lr."""
    info = runs.assign(run_id=runs["run_id"].astype(str)).set_index("run_id")
    d = curves[curves[norm].notna() & (curves[x] > 0)].assign(run_id=lambda t: t["run_id"].astype(str))
    d = d[d["run_id"].isin(info.index)]
    panels = _spread(info[panel].dropna(), max_panels) if panel else [None]
    fig, axes = new_figure(len(panels), sharey=True, width=4.4)
    lrs = np.log2(info[lr].astype(float))
    cnorm = Normalize(lrs.min(), lrs.max())
    cm = matplotlib.colormaps[CMAP]
    shown_lrs = set(_spread(info[lr].astype(float), max_lrs))
    for ax, pv in zip(axes[0], panels):
        ids = info.index[(info[panel] == pv) if panel else slice(None)]
        for rid, g in d[d["run_id"].isin(ids)].groupby("run_id"):
            r_lr = float(info.loc[rid, lr])
            if r_lr in shown_lrs:
                ax.plot(g[x], g[norm], "-", color=cm(cnorm(np.log2(r_lr))), lw=1.3)
        log2_axis(ax, "xy")
        ax.set_xlabel(x)
        ax.set_title(f"{panel.split('.')[-1]} = {pv}" if panel else title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(norm)
    fig.colorbar(matplotlib.cm.ScalarMappable(cnorm, cm), ax=axes[0].tolist(), label=f"log2 {lr}")
    if panel:
        fig.suptitle(title)
    return fig


def plot_optimal_norm_vs_horizon(optima: pd.DataFrame, horizon: str = "D", batch: str = "B",
                                 per_horizon: pd.DataFrame | None = None, band: tuple[float, float] | None = None,
                                 title: str = "Optimal output norm vs horizon"):
    """The central figure of arXiv 2510.03871 (does the optimal norm stay put?): log2 of the optimal
    output norm against the horizon D (log2 x), one line per batch size (sequential colours) with its
    interval as error bars (log2_norm_lo/hi); edge or concave optima hollow and without bars (their
    interval is one-sided).
    per_horizon (norm_per_horizon's table) adds the norm at B* as a dashed black line; band shades the
    optimal-norm band."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    cmap = colours(optima[batch].dropna().unique())
    for b, g in optima[np.isfinite(optima["log2_norm_opt"].to_numpy(float))].groupby(batch, sort=True):
        g = g.sort_values(horizon)
        ok = g["ok"].to_numpy(bool) if "ok" in g else np.ones(len(g), bool)
        y = g["log2_norm_opt"].to_numpy(float)
        ax.plot(g[horizon], y, "-", color=cmap[b], lw=1.2, label=f"{batch} = {fmt_num(b)}")
        gi = g[ok]
        yerr = np.vstack([gi["log2_norm_opt"] - gi["log2_norm_lo"], gi["log2_norm_hi"] - gi["log2_norm_opt"]]) \
            if {"log2_norm_lo", "log2_norm_hi"} <= set(g.columns) else None
        ax.errorbar(gi[horizon], gi["log2_norm_opt"], yerr=yerr, fmt="o", color=cmap[b], ms=5, capsize=3)
        ax.plot(g[horizon][~ok], y[~ok], "o", color=cmap[b], mfc="white", ms=5)
    if per_horizon is not None and len(per_horizon):
        p = per_horizon.sort_values(horizon)
        ax.plot(p[horizon], p["log2_norm_opt"], "--", color="black", lw=1.2, label="at B*")
    if band is not None:
        ax.axhspan(band[0], band[1], color="orange", alpha=0.15, label="optimal-norm band")
    log2_axis(ax, "x")
    ax.set_xlabel(f"horizon {horizon} (tokens)")
    ax.set_ylabel("log2 optimal output norm")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="hollow: edge of the grid (a bound)", title_fontsize=7)
    return fig

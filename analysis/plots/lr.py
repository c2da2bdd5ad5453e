"""Learning-rate and batch-size figures: loss vs lr per width, optimal lr vs width, eta* vs B, B* vs D."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit import Fit
from analysis.plots.style import colours, fmt_num, log2_axis, new_figure
from analysis.powerlaw import predict_power_law


def plot_loss_vs_lr(runs: pd.DataFrame, x: str = "optim.lr", y: str = "final_val_loss", color: str = "model.width",
                    panel: str | None = "param.kind", optima: pd.DataFrame | None = None, title: str = ""):
    """One panel per value of `panel`: y vs x (log2) with one line per `color` value (sequential
    colours); optima drawn as stars with their interval (hollow when at the grid edge or concave);
    diverged / non-finite runs as crosses along the top of the panel."""
    panels = sorted(runs[panel].dropna().unique(), key=str) if panel else [None]
    fig, axes = new_figure(len(panels), sharey=True)
    cmap = colours(runs[color].dropna().unique())
    finite_y = runs[y][np.isfinite(runs[y].to_numpy(float))]
    top = finite_y.max() if len(finite_y) else 1.0
    bottom = finite_y.min() if len(finite_y) else 0.0
    pad = 0.05 * (top - bottom) if top > bottom else 0.1
    for ax, pv in zip(axes[0], panels):
        sub = runs if pv is None else runs[runs[panel] == pv]
        for cv, g in sub.groupby(color, sort=True):
            ok = np.isfinite(g[y].to_numpy(float))
            mean = g[ok].groupby(x)[y].mean()
            ax.plot(mean.index, mean.values, "o-", ms=3.5, lw=1.4, color=cmap[cv],
                    label=f"{color.split('.')[-1]}={fmt_num(cv)}")
            bad = g[~ok]
            if len(bad):
                ax.plot(bad[x], np.full(len(bad), top + 1.5 * pad), "x", color=cmap[cv], ms=6, mew=1.5)
            if optima is not None:
                o = optima[(optima[color] == cv) & ((optima[panel] == pv) if panel else True)]
                o = o[np.isfinite(o["x_opt"].to_numpy(float))]
                for _, r in o.iterrows():
                    hollow = bool(r.get("at_edge", False) or r.get("concave", False))
                    # a censored (edge) optimum has a one-sided interval: no error bar
                    xerr = None if r.get("at_edge", False) else [[r["x_opt"] - r["x_lo"]], [r["x_hi"] - r["x_opt"]]]
                    ax.errorbar(r["x_opt"], r["y_opt"], xerr=xerr, fmt="*", ms=13, color=cmap[cv],
                                mfc="white" if hollow else cmap[cv], mec="black", mew=0.8, capsize=3, zorder=5)
        log2_axis(ax, "x")
        ax.set_xlabel(f"learning rate ({x})")
        ax.set_title(f"{panel} = {pv}" if panel else title)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom - pad, top + 2.5 * pad)
    axes[0][0].set_ylabel(y)
    axes[0][-1].legend(fontsize=8, title="★ optimum (hollow: edge)\n× diverged", title_fontsize=7)
    if title and panel:
        fig.suptitle(title)
    return fig


def plot_optimal_lr_vs_width(optima: pd.DataFrame, width: str = "model.width", kind: str = "param.kind",
                             fits: dict[str, Fit] | None = None, title: str = "Optimal learning rate vs width"):
    """eta* (log2) vs width (log2) per parametrization, with intervals and the fitted power law
    (exponent and CI in the legend); edge optima hollow."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    markers = "osD^v<>"
    palette = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
    for i, (kv, g) in enumerate(optima.groupby(kind, sort=True)):
        c = palette[i % len(palette)]
        g = g[np.isfinite(g["x_opt"].to_numpy(float))].sort_values(width)
        edge = g["at_edge"].to_numpy(bool) | g.get("concave", pd.Series(False, index=g.index)).to_numpy(bool)
        gi = g[~g["at_edge"].to_numpy(bool)]  # edge optima have one-sided intervals: no error bar
        yerr = [gi["x_opt"] - gi["x_lo"], gi["x_hi"] - gi["x_opt"]]
        ax.errorbar(gi[width], gi["x_opt"], yerr=yerr, fmt="none", ecolor=c, capsize=3, alpha=0.8)
        ax.plot(g[width][~edge], g["x_opt"][~edge], markers[i % 7], color=c, ms=7)
        ax.plot(g[width][edge], g["x_opt"][edge], markers[i % 7], color=c, mfc="white", ms=7)
        label = f"{kv}"
        if fits and kv in fits:
            f = fits[kv]
            w = np.geomspace(g[width].min(), g[width].max(), 50)
            lo, hi = f.ci.get("b", (np.nan, np.nan))
            label += f": η* ∝ width$^{{{f['b']:.2f}}}$"
            label += f"  95% CI [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
            ax.plot(w, predict_power_law(f, w), "-", color=c, lw=1.5, label=label)
        else:
            ax.plot([], [], markers[i % 7], color=c, label=label)
    log2_axis(ax, "xy")
    ax.set_xlabel(width)
    ax.set_ylabel("optimal learning rate η*")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="hollow: edge of grid (excluded from fit)", title_fontsize=7)
    return fig


def plot_lr_vs_batch(optima: pd.DataFrame, lr: str = "lr_opt", batch: str = "B", horizon: str = "D",
                     fit: Fit | None = None, title: str = "η* vs batch size per horizon"):
    """eta*(B) per horizon D (sequential colours), with the joint log-linear fit as lines."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    cmap = colours(optima[horizon].unique())
    for h, g in optima.groupby(horizon, sort=True):
        g = g.sort_values(batch)
        ok = g["ok"].to_numpy(bool) if "ok" in g else np.ones(len(g), bool)
        ax.plot(g[batch][ok], g[lr][ok], "o", color=cmap[h], label=f"D = 2^{np.log2(h):.0f}")
        ax.plot(g[batch][~ok], g[lr][~ok], "o", color=cmap[h], mfc="white")
        if fit is not None:
            b = np.geomspace(g[batch].min(), g[batch].max(), 20)
            p = fit.params
            ax.plot(b, 2.0 ** (p[batch] * np.log2(b) + p[horizon] * np.log2(h) + p["intercept"]), "-", color=cmap[h])
    log2_axis(ax, "xy")
    ax.set_xlabel(f"batch size {batch}")
    ax.set_ylabel("optimal learning rate η*")
    if fit is not None:
        p = fit.params
        title += (f"\nlog2 η* = {p[batch]:.2f} log2 B {p[horizon]:+.2f} log2 D {p['intercept']:+.2f}"
                  f"  (R² {fit.r2:.2f})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_bstar(per_horizon: pd.DataFrame, horizon: str = "D", batch: str = "B_opt", fit: Fit | None = None,
               title: str = "Optimal batch size vs horizon"):
    """B*(D) points (hollow at the edge of the batch grid: censored, not fitted) with the power-law fit,
    drawn over the span of the fitted (filled) points only."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    edge = per_horizon["b_at_edge"].to_numpy(bool) if "b_at_edge" in per_horizon else np.zeros(len(per_horizon), bool)
    ax.plot(per_horizon[horizon][~edge], per_horizon[batch][~edge], "o", color="tab:blue", ms=7, label="B*(D)")
    ax.plot(per_horizon[horizon][edge], per_horizon[batch][edge], "o", color="tab:blue", mfc="white", ms=7,
            label="B* at grid edge")
    if fit is not None and (~edge).any():
        d = np.geomspace(per_horizon[horizon][~edge].min(), per_horizon[horizon][~edge].max(), 30)
        lo, hi = fit.ci.get("b", (np.nan, np.nan))
        ax.plot(d, predict_power_law(fit, d), "-", color="tab:blue",
                label=f"B* ∝ D$^{{{fit['b']:.2f}}}$" + (f"  95% CI [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""))
    log2_axis(ax, "xy")
    ax.set_xlabel(f"horizon {horizon} (tokens)")
    ax.set_ylabel("optimal batch size B*")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig

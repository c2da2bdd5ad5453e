"""Norm-transfer figures: loss vs output norm coloured by learning rate; norm vs step."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from analysis.plots.style import CMAP, log2_axis, new_figure


def plot_loss_vs_norm(table: pd.DataFrame, norm: str = "output_norm", loss: str = "loss", lr: str = "lr",
                      optimum: dict | pd.Series | None = None, band: tuple[float, float] | None = None,
                      title: str = "Loss vs output norm"):
    """Scatter of loss against the output norm (log2 x) coloured by log2 lr, with the fitted parabola
    and the optimum (dashed) when `optimum` (a row of optimal_norms) is given; optional norm band."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    l2 = np.log2(table[lr].to_numpy(float))
    sc = ax.scatter(table[norm], table[loss], c=l2, cmap=CMAP, norm=Normalize(l2.min(), l2.max()), s=28,
                    edgecolors="black", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label=f"log2 {lr}")
    if optimum is not None:
        a, b, c = optimum.get("coef_a"), optimum.get("coef_b"), optimum.get("coef_c")
        if a is not None and np.isfinite(a):
            u = np.linspace(np.log2(table[norm].min()), np.log2(table[norm].max()), 100)
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


def plot_norm_vs_step(curves: pd.DataFrame, runs: pd.DataFrame, norm: str = "norm/param/output", x: str = "step",
                      lr: str = "optim.lr", style: str | None = "run.batch_size", title: str = "Output norm vs step"):
    """One line per run, log2-log2 axes, colour = log2 learning rate, line style per `style` value."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    info = runs.set_index(runs["run_id"].astype(str))
    d = curves[curves[norm].notna() & (curves[x] > 0)]
    lrs = np.log2(info[lr].astype(float))
    cnorm = Normalize(lrs.min(), lrs.max())
    cm = matplotlib.colormaps[CMAP]
    styles = ["-", "--", ":", "-."]
    style_of = {v: styles[i % 4] for i, v in enumerate(sorted(info[style].dropna().unique()))} if style else {}
    for rid, g in d.groupby("run_id", observed=True):
        r = info.loc[str(rid)]
        ax.plot(g[x], g[norm], style_of.get(r[style], "-") if style else "-", color=cm(cnorm(np.log2(r[lr]))), lw=1.1)
    for v, ls in style_of.items():
        ax.plot([], [], ls, color="gray", label=f"{style.split('.')[-1]}={v}")
    fig.colorbar(matplotlib.cm.ScalarMappable(cnorm, cm), ax=ax, label=f"log2 {lr}")
    log2_axis(ax, "xy")
    ax.set_xlabel(x)
    ax.set_ylabel(norm)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if style_of:
        ax.legend(fontsize=8)
    return fig

"""Compute-optimal figures: IsoFLOP curves with their vertices; the L(N, D) fit with residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.chinchilla import chinchilla_loss
from analysis.fit import Fit
from analysis.plots.style import colours, new_figure


def plot_isoflop(df: pd.DataFrame, n: str = "N", loss: str = "loss", compute: str = "C",
                 vertices: pd.DataFrame | None = None, title: str = "IsoFLOP curves"):
    """Loss vs N per compute budget (sequential colours) with the parabola in ln N and its vertex
    (hollow when the vertex failed the convex/interior checks)."""
    fig, axes = new_figure(1)
    ax = axes[0][0]
    budgets = np.unique(df[compute]) if vertices is None else vertices["C"].to_numpy()
    cmap = colours(budgets)
    for C in budgets:
        g = df[np.isclose(df[compute], C, rtol=1e-2)].sort_values(n)
        if g.empty:
            continue
        col = cmap[C]
        ax.plot(g[n], g[loss], "o", color=col, ms=4, label=f"C = {C:.1e}")
        if len(g) >= 3:
            u = np.log(g[n].to_numpy(float))
            p = np.polyfit(u, g[loss], 2)
            uu = np.linspace(u.min(), u.max(), 60)
            ax.plot(np.exp(uu), np.polyval(p, uu), "-", color=col, lw=1)
        if vertices is not None:
            v = vertices[vertices["C"] == C]
            if len(v) and np.isfinite(v["N_opt"].iloc[0]):
                ok = bool(v["ok"].iloc[0])
                ax.plot(v["N_opt"], v["loss_opt"], "*", ms=12, color=col, mec="black", mfc=col if ok else "white")
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters {n}")
    ax.set_ylabel(loss)
    ax.set_title(title + "\n(★ vertex; hollow: failed convex/interior checks)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_chinchilla_fit(df: pd.DataFrame, fit: Fit, n: str = "N", d: str = "D", loss: str = "loss",
                        title: str = "Chinchilla Approach 3 fit"):
    """Left: observed loss vs predicted L(N, D) (identity line), coloured by log10 compute.
    Right: log residuals vs N."""
    fig, axes = new_figure(2)
    N, D, L = (df[c].to_numpy(float) for c in (n, d, loss))
    pred = chinchilla_loss(fit.params, N, D)
    c = np.log10(6 * N * D)
    ax = axes[0][0]
    sc = ax.scatter(pred, L, c=c, cmap="viridis", s=14, edgecolors="none")
    lims = [min(pred.min(), L.min()), max(pred.max(), L.max())]
    ax.plot(lims, lims, "k--", lw=1, label="y = x")
    ax.set_xlabel("predicted L(N, D)")
    ax.grid(alpha=0.3)
    ax.set_ylabel(f"observed {loss}")
    p = fit.params
    ax.set_title(f"{title}\nE={p['E']:.3g}, A={p['A']:.3g}, B={p['B']:.3g}, α={p['alpha']:.3f}, β={p['beta']:.3f}",
                 fontsize=9)
    fig.colorbar(sc, ax=ax, label="log10 C = log10 6ND")
    ax = axes[0][1]
    ax.scatter(N, np.log(L) - np.log(pred), c=c, cmap="viridis", s=14, edgecolors="none")
    ax.axhline(0, color="black", lw=1)
    delta = fit.details.get("delta")
    if delta:
        ax.axhspan(-delta, delta, color="orange", alpha=0.2, label=f"±δ = {delta:g}")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters {n}")
    ax.set_ylabel("log residual  log L − log L̂")
    ax.set_title(f"residuals (R² of log loss = {fit.r2:.3f})", fontsize=9)
    ax.grid(alpha=0.3)
    return fig

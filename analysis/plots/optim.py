"""Optimizer comparison: best loss per horizon at each optimizer's own tuned lr, and the speedup over
a baseline with its interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit import Fit
from analysis.plots.style import log2_axis, new_figure

PALETTE = ("black", "tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def plot_optimizer_comparison(tuned: pd.DataFrame, speedups: pd.DataFrame | None = None, optimizer: str = "optimizer",
                              horizon: str = "horizon", baseline: str = "adamw",
                              fits: dict[str, Fit] | None = None, panel: str | None = None, xlabel: str | None = None,
                              title: str = "Optimizer comparison at each optimizer's tuned learning rate"):
    """Left: best loss vs horizon (log2) per optimizer, each at its own tuned lr (hollow where the tuned
    lr sits at the edge of its grid: a bound), with the baseline's fitted L(k) = alpha k^-B + beta.
    Right: speedup over the baseline vs horizon with its interval (line at 1). `tuned` has columns
    optimizer, horizon, loss, at_edge (and `panel` when the comparison is per group: the first group is
    drawn, the title says which); `speedups` has optimizer, horizon, speedup, speedup_lo, speedup_hi."""
    groups = sorted(tuned[panel].dropna().unique(), key=str) if panel else [None]
    fig, axes = new_figure(2, len(groups))
    opts = [baseline] + sorted((o for o in tuned[optimizer].unique() if o != baseline), key=str)
    colour = {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(opts)}
    for row, gv in enumerate(groups):
        ax_l, ax_r = axes[row][0], axes[row][1]
        t = tuned if gv is None else tuned[tuned[panel] == gv]
        for o in opts:
            g = t[t[optimizer] == o].sort_values(horizon)
            g = g[np.isfinite(g["loss"].to_numpy(float))]
            if g.empty:
                continue
            edge = g["at_edge"].to_numpy(bool) if "at_edge" in g else np.zeros(len(g), bool)
            ax_l.plot(g[horizon], g["loss"], "-", color=colour[o], lw=1.2)
            ax_l.plot(g[horizon][~edge], g["loss"][~edge], "o", color=colour[o], ms=6, label=str(o))
            ax_l.plot(g[horizon][edge], g["loss"][edge], "o", color=colour[o], mfc="white", ms=6)
        key = "all" if gv is None else f"{panel}={gv}"
        fit = (fits or {}).get(key)
        base = t[t[optimizer] == baseline]
        if fit is not None and len(base):
            h = np.geomspace(base[horizon].min(), base[horizon].max(), 60)
            k = h / fit.details.get("k_unit", base[horizon].min())
            p = fit.params
            ax_l.plot(h, p["alpha"] * k ** -p["B"] + p["beta"], "--", color=colour[baseline], lw=1,
                      label=f"{baseline} fit: α k^-{p['B']:.2f} + {p['beta']:.3g}")
        log2_axis(ax_l, "x")
        ax_l.set_xlabel(f"horizon ({xlabel or horizon})")
        ax_l.set_ylabel("best loss at the tuned lr")
        ax_l.grid(alpha=0.3)
        ax_l.legend(fontsize=8, title="hollow: tuned lr at the grid edge", title_fontsize=7)
        ax_l.set_title(f"Best loss per horizon{'' if gv is None else f' ({panel}={gv})'}", fontsize=10)
        ax_r.axhline(1.0, color=colour[baseline], lw=1, ls=":", label=f"{baseline} (baseline)")
        if speedups is not None and len(speedups):
            s = speedups if gv is None else speedups[speedups[panel] == gv]
            for i, o in enumerate(x for x in opts if x != baseline):
                g = s[s[optimizer] == o].sort_values(horizon)
                g = g[np.isfinite(g["speedup"].to_numpy(float))]
                if g.empty:
                    continue
                lo = g["speedup_lo"].to_numpy(float) if "speedup_lo" in g else np.full(len(g), np.nan)
                hi = g["speedup_hi"].to_numpy(float) if "speedup_hi" in g else np.full(len(g), np.nan)
                sp = g["speedup"].to_numpy(float)
                yerr = np.vstack([np.where(np.isfinite(lo), sp - lo, 0), np.where(np.isfinite(hi), hi - sp, 0)])
                shift = 2.0 ** (0.06 * (i - 0.5 * (len(opts) - 2)))  # side by side when several optimizers
                ax_r.errorbar(g[horizon].to_numpy(float) * shift, sp, yerr=np.clip(yerr, 0, None), fmt="o-",
                              color=colour[o], capsize=3, ms=6, lw=1.2, label=str(o))
        log2_axis(ax_r, "x")
        ax_r.set_xlabel(f"horizon ({xlabel or horizon})")
        ax_r.set_ylabel(f"speedup over {baseline} (data multiple)")
        ax_r.grid(alpha=0.3)
        ax_r.legend(fontsize=8, title="bars: 95% interval", title_fontsize=7)
        ax_r.set_title("Speedup: baseline data needed / data used", fontsize=10)
    fig.suptitle(title, fontsize=11)
    return fig

"""Diagnostic figures: coordinate check (activation scale vs width) and embedding row-norm histogram."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots.style import colours, log2_axis, new_figure


MIN_OCTAVES = 2.0  # a coordinate-check panel spans at least a factor 2^2 in y, so flat lines look flat


def plot_coord_check(df: pd.DataFrame, width: str = "width", value: str = "rms", step: str = "step",
                     panel: str | None = "layer", title: str = "Coordinate check"):
    """Activation (or update) RMS vs width, one line per training step, one panel per layer/role.
    Reads the rows of `scaling.coord_check.coord_check` as they are: columns width, step, layer, rms
    (l1 with value="l1"). Under a width-transferable parametrization the lines are flat (Yang et al.
    2021, Tensor Programs V, arXiv 2203.03466, Fig. 5); the log2-log2 slope of the last step is shown
    in each title. Each panel's y range covers at least MIN_OCTAVES octaves, so that a curve drifting
    by a few per cent is drawn flat rather than stretched across the panel; non-positive values (an
    exactly zero readout at init) are left out of the log axes and of the slope."""
    missing = [c for c in (width, value, step, panel) if c is not None and c not in df]
    if missing:
        raise KeyError(f"plot_coord_check: no column(s) {missing} in {list(df.columns)}")
    panels = list(dict.fromkeys(df[panel])) if panel else [None]
    fig, axes = new_figure(min(len(panels), 4), nrows=int(np.ceil(len(panels) / 4)), width=4.2, height=3.4)
    flat = axes.ravel()
    cmap = colours(df[step].unique())
    for ax, pv in zip(flat, panels):
        sub = df if pv is None else df[df[panel] == pv]
        sub = sub[np.isfinite(sub[value].to_numpy(float)) & (sub[value].to_numpy(float) > 0)]
        slope = np.nan
        for s, g in sub.groupby(step, sort=True):
            g = g.groupby(width)[value].mean()
            ax.plot(g.index, g.values, "o-", ms=3, color=cmap[s], label=f"step {s}")
            slope = np.polyfit(np.log2(g.index.to_numpy(float)), np.log2(g.values), 1)[0] if len(g) >= 2 else np.nan
        log2_axis(ax, "xy")
        if len(sub):
            lo, hi = np.log2(sub[value].min()), np.log2(sub[value].max())
            pad = max(0.0, MIN_OCTAVES - (hi - lo)) / 2 + 0.1 * max(hi - lo, MIN_OCTAVES)
            ax.set_ylim(2 ** (lo - pad), 2 ** (hi + pad))
        ax.set_xlabel(width)
        ax.set_ylabel(value)
        ax.set_title(f"{pv if pv is not None else title}  (slope {slope:+.2f})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    flat[0].legend(fontsize=7)
    if panel:
        fig.suptitle(title)
    return fig


def plot_embedding_row_norms(norms, groups: dict | None = None, bins: int = 60, log: bool = True,
                             title: str = "Embedding row norms"):
    """Histogram of per-token embedding row norms (array), or several arrays (dict label -> array)
    overlaid, e.g. one per optimizer; log-spaced bins by default (rarely-seen tokens drift apart)."""
    series = groups if groups is not None else {"rows": np.asarray(norms, float)}
    fig, axes = new_figure(1)
    ax = axes[0][0]
    allv = np.concatenate([np.asarray(v, float) for v in series.values()])
    allv = allv[np.isfinite(allv) & ((allv > 0) if log else True)]
    edges = np.geomspace(allv.min(), allv.max(), bins) if log else np.linspace(allv.min(), allv.max(), bins)
    for (label, v), col in zip(series.items(), colours(range(len(series))).values()):
        ax.hist(np.asarray(v, float), bins=edges, histtype="stepfilled", alpha=0.45, color=col, label=label,
                edgecolor=col)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("row norm ‖E[v, :]‖₂")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig

"""Shared figure helpers: figure creation without pyplot, log2 axes, sequential colours, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from analysis.validate import is_number

CMAP = "viridis"


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.2, height: float = 4.0, **kw):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def log2_axis(ax, which: str = "x") -> None:
    """Base-2 log scale with ticks labelled 2^k."""
    fmt = FuncFormatter(lambda v, _: f"$2^{{{np.log2(v):.0f}}}$" if v > 0 and abs(np.log2(v) - round(np.log2(v))) < 1e-6
                        else "")
    for name in which:
        getattr(ax, f"set_{name}scale")("log", base=2)
        axis = getattr(ax, f"{name}axis")
        axis.set_major_locator(LogLocator(base=2, numticks=12))
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def colours(values: Sequence, cmap: str = CMAP) -> dict:
    """Distinct sorted values -> colours along a sequential colormap (dark to light, skipping the
    palest end so every line stays visible on white)."""
    vals = sorted(set(values), key=lambda v: (float(v) if is_number(v) else 0, str(v)))
    cm = matplotlib.colormaps[cmap]
    pos = np.linspace(0.0, 0.85, max(len(vals), 1))
    return {v: cm(p) for v, p in zip(vals, pos)}


def fmt_num(v) -> str:
    if is_number(v):
        f = float(v)
        return f"{int(f)}" if f.is_integer() and abs(f) < 1e6 else f"{f:.3g}"
    return str(v)


def save_figure(fig: Figure, path: str | Path, dpi: int = 130) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

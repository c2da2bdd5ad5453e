"""Helpers shared by the analysis recipes: run selection, column defaults, guarded fits, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.plots.style import save_figure

FINISHED = ("done", "diverged")


def state_counts(runs: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in runs["state"].value_counts().items()} if "state" in runs else {}


def finished_runs(runs: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Runs that finished (done or diverged); the others are reported, not fitted."""
    if "state" not in runs:
        return runs
    counts = state_counts(runs)
    skipped = {k: v for k, v in counts.items() if k not in FINISHED}
    if skipped:
        warnings.append("not analysed (unfinished): " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())))
    out = runs[runs["state"].isin(FINISHED)]
    if out.empty:
        raise AnalysisError(f"no finished runs in the store (states: {counts or 'none'})")
    return out


def pick_column(df: pd.DataFrame, preferred: str | None, fallbacks: tuple[str, ...], what: str) -> str:
    """The requested column, or the first fallback holding finite values."""
    if preferred is not None:
        if preferred not in df.columns:
            raise AnalysisError(f"{what}: missing column {preferred!r}")
        return preferred
    for c in fallbacks:
        if c in df.columns and np.isfinite(pd.to_numeric(df[c], errors="coerce")).any():
            return c
    raise AnalysisError(f"{what}: none of the columns {', '.join(map(repr, fallbacks))} has finite values")


def guarded(name: str, fn: Callable[[], Fit], warnings: list[str]) -> Fit | None:
    """Run a fit; an AnalysisError becomes a plain 'fit failed' warning instead of aborting the recipe."""
    try:
        fit = fn()
    except AnalysisError as e:
        warnings.append(f"fit {name} failed: {e}")
        return None
    warnings.extend(f"{name}: {w}" for w in fit.warnings)
    return fit


def write_figure(fig, out_dir: Path | None, name: str, written: list[str]) -> None:
    if out_dir is None:
        return
    path = save_figure(fig, Path(out_dir) / f"{name}.png")
    written.append(path.name)


def ci_text(fit: Fit | None, key: str, fmt: str = ".3g") -> str:
    if fit is None:
        return "fit failed"
    lo, hi = fit.ci.get(key, (np.nan, np.nan))
    v = fit.params[key]
    return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and np.isfinite(lo) else f"{v:{fmt}}"

"""Input checks shared by the fitters: each raises one AnalysisError naming the column or group."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError


def require_frame(df, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise AnalysisError(f"{what}: the table is empty (no rows to fit)")
    return df


def require_columns(df: pd.DataFrame, columns: Iterable[str | None], what: str) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        avail = ", ".join(map(str, list(df.columns)[:30])) + (" ..." if len(df.columns) > 30 else "")
        raise AnalysisError(f"{what}: missing column {', '.join(map(repr, missing))} (available: {avail})")


def as_list(cols: str | Sequence[str] | None) -> list[str]:
    if cols is None:
        return []
    return [cols] if isinstance(cols, str) else list(cols)


def numeric(df: pd.DataFrame, col: str, what: str) -> np.ndarray:
    try:
        return pd.to_numeric(df[col], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as e:
        raise AnalysisError(f"{what}: column {col!r} is not numeric ({e})") from None


def positive(df: pd.DataFrame, col: str, what: str, group: str = "") -> np.ndarray:
    """Column as float array; every value must be finite and > 0 (it will be logged)."""
    x = numeric(df, col, what)
    bad = ~(np.isfinite(x) & (x > 0))
    if bad.any():
        where = f" in group {group}" if group else ""
        raise AnalysisError(f"{what}: column {col!r} has {int(bad.sum())} non-positive or non-finite value(s)"
                            f"{where} (e.g. {x[bad][0]!r}); a log fit needs values > 0")
    return x


def finite_rows(df: pd.DataFrame, cols: Iterable[str]) -> pd.Series:
    """Boolean mask of rows where every listed column is a finite number."""
    mask = pd.Series(True, index=df.index)
    for c in cols:
        mask &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(float))
    return mask


def group_label(keys: Sequence[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def need_points(n: int, minimum: int, what: str, group: str = "") -> None:
    if n < minimum:
        where = f" (group {group})" if group else ""
        raise AnalysisError(f"{what}: {n} usable point(s){where}, need at least {minimum}")

"""Input checks shared by the fitters: each raises one AnalysisError naming the column or group.

`public` marks a function users call: an AnalysisError raised anywhere below the outermost public call
(fit_approach2 -> isoflop_optima, fit_steplaw -> fit_log_linear) is reported under the name of the
function the user called. `pooled_groups` says when rows look like several groups fitted as one.
"""

from __future__ import annotations

import functools
import re
import warnings
from contextvars import ContextVar
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError, AnalysisWarning

_ENTRY: ContextVar[str | None] = ContextVar("analysis_entry", default=None)
_PUBLIC: set[str] = set()
_PREFIX = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?P<detail>\([^)]*\))?: ")


def public(fn):
    """Decorator of the functions users call. Inside the outermost public call, an AnalysisError whose
    message starts with the name of another public function ("isoflop_optima: missing column 'C'") is
    renamed to the outer one ("fit_approach2: missing column 'C'"), keeping any detail in parentheses."""
    name = fn.__name__
    _PUBLIC.add(name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _ENTRY.get() is not None:
            return fn(*args, **kwargs)
        token = _ENTRY.set(name)
        try:
            return fn(*args, **kwargs)
        except AnalysisError as e:
            msg = str(e)
            m = _PREFIX.match(msg)
            if m and m["name"] in _PUBLIC and m["name"] != name:
                detail = f" {m['detail']}" if m["detail"] else ""
                e.args = (f"{name}{detail}: {msg[m.end():]}",)
            raise
        finally:
            _ENTRY.reset(token)

    return wrapper


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
                            f"{where} (e.g. {float(x[bad][0])!r}); a log fit needs values > 0")
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


def iter_groups(df: pd.DataFrame, by: str | Sequence[str] | None, what: str):
    """(key tuple, label, rows) per group of the `by` columns, sorted; one ((), "all rows", df) without by.
    Rows with a NaN group key are dropped with an AnalysisWarning naming the column (a NaN key is no
    group: typically a run missing from the runs table)."""
    by = as_list(by)
    if not by:
        yield (), "all rows", df
        return
    nan = df[by].isna().any(axis=1).to_numpy()
    if nan.any():
        cols = ", ".join(repr(c) for c in by if df[c].isna().any())
        warnings.warn(f"{what}: {int(nan.sum())} row(s) with no value in {cols} dropped (a NaN group key)",
                      AnalysisWarning, stacklevel=3)
    for key, g in df[~nan].groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield key, group_label(by, key), g


def need_points(n: int, minimum: int, what: str, group: str = "") -> None:
    if n < minimum:
        where = f" (group {group})" if group else ""
        raise AnalysisError(f"{what}: {n} usable point(s){where}, need at least {minimum}")


def pooled_groups(df: pd.DataFrame, x: str | Sequence[str], y: str, seed_col: str | None = None,
                  ignore: Iterable[str | None] = (), what: str = "", by_hint: str = "by",
                  require_hint: bool = False, candidates: Iterable[str] | None = None) -> str | None:
    """A warning sentence when the rows look like several groups fitted as one, else None.

    Without a seed column: some x value repeats at different y (the fit will treat the repeats as
    seeds). With one: some (x, seed) repeats at different y. Names the columns whose values would
    tell the repeats apart (pass them as `by_hint`). require_hint (for rows already grouped by the
    user): stay silent about seedless repeats unless some column separates them. candidates: the
    columns that may be named (default: all; a column with more distinct values than half the rows is
    never a group key)."""
    xs = as_list(x)
    keys = xs + ([seed_col] if seed_col else [])
    d = df[[c for c in dict.fromkeys([*keys, y]) if c in df.columns]]
    if d.empty:
        return None
    spread = d.groupby(keys, dropna=False)[y].nunique(dropna=True)
    mixed = spread[spread > 1]
    if mixed.empty:
        return None
    skip = set(keys) | {y} | {c for c in ignore if c}
    hints = []
    mixed_keys = mixed.index
    for c in (df.columns if candidates is None else [c for c in candidates if c in df.columns]):
        if c in skip:
            continue
        try:
            if not 2 <= df[c].nunique(dropna=False) <= min(50, len(df) // 2):
                continue
            varies = df.groupby(keys, dropna=False)[c].nunique(dropna=False).reindex(mixed_keys)
            if (varies > 1).mean() >= 0.5:  # the column changes within most repeated cells
                hints.append(c)
        except TypeError:  # unhashable values
            continue
    if require_hint and not hints and not seed_col:
        return None
    where = f"{what}: " if what else ""
    label = ", ".join(xs)
    if seed_col:
        msg = (f"{where}{len(mixed)} ({label}, {seed_col}) value(s) repeat at different {y!r}: these rows hold "
               "several groups pooled into one fit")
    else:
        msg = (f"{where}{len(mixed)} value(s) of {label} repeat at different {y!r} and no seed column says they "
               "are replicates: they are pooled (treated as seeds)")
    if hints:
        msg += f"; column(s) {', '.join(map(repr, hints[:4]))} tell them apart: pass {by_hint}={hints[0]!r}"
    elif not seed_col:
        msg += " (pass seed_col= if they are seeds)"
    return msg


def is_number(v) -> bool:
    """Whether float(v) works (group labels sort numbers before strings)."""
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False

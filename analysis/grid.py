"""Snap logged hyperparameters to their nominal grid before grouping.

The same grid value can be logged with different rounding (2.44e-4 vs 2.441e-4, StepLaw's caveat);
grouped as is, one learning rate splits in two and argmin and near-optimal counts change.
"""

from __future__ import annotations

import numpy as np


def snap_relative(values, rtol: float = 1e-3) -> np.ndarray:
    """Merge values whose ratio to their sorted neighbour is within 1 + rtol; each cluster takes its
    median. NaN stays NaN; rtol = 0 returns the values unchanged."""
    v = np.asarray(values, dtype=float)
    out = v.copy()
    if rtol <= 0:
        return out
    ok = np.isfinite(v)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    order = idx[np.argsort(v[idx], kind="stable")]
    s = v[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.diff(s)) > rtol * np.maximum(np.abs(s[:-1]), np.abs(s[1:]))
    labels = np.concatenate([[0], np.cumsum(gap)])
    for lab in np.unique(labels):
        members = order[labels == lab]
        out[members] = np.median(v[members])
    return out


def snap_geometric(values, ratio: float = 2**0.5, anchor: float = 1.0) -> np.ndarray:
    """Round each value to the nearest anchor * ratio^k (e.g. a sqrt(2) learning-rate grid)."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.round(np.log(v / anchor) / np.log(ratio))
        return np.where(v > 0, anchor * ratio**k, v)

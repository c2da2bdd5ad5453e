"""Nonparametric bootstrap helpers: resampling weights, cluster resampling, percentile intervals.

Resamples are expressed as integer weight vectors (how often each row is drawn), so a weighted
fitter refits every replicate in one vectorised call (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 6 and 13 for standard errors and percentile intervals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) draw counts of n rows sampled with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def cluster_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row weights from resampling whole clusters (e.g. groups or seeds) with replacement."""
    labels, inverse = np.unique(clusters, return_inverse=True)
    counts = resample_weights(len(labels), n_boot, rng)
    return counts[:, inverse]


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite samples (nan, nan when fewer than 10 are finite)."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size < 10:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def summarize(samples: pd.DataFrame, level: float = 0.95) -> tuple[dict, dict]:
    """Percentile intervals and standard errors of every column of a replicate table."""
    ci = {c: percentile_interval(samples[c].to_numpy(), level) for c in samples.columns}
    with np.errstate(over="ignore", invalid="ignore"):  # replicates of an undetermined law can be huge
        se = {c: float(np.nanstd(samples[c].to_numpy(float), ddof=1)) if samples[c].notna().sum() > 1
              else float("nan") for c in samples.columns}
    return ci, se

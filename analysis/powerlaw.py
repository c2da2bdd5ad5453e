"""Power laws y = a x^b and multi-variable log-linear laws, by OLS in log space with bootstrap CIs.

log_base y = c_1 log_base x_1 + ... + c_k log_base x_k + intercept, as used for eta*(B, D)
(Filatov et al. arXiv 2510.03871: log2 eta* = alpha log2 B + beta log2 D + gamma), StepLaw's
eta(N, D) and DeepSeek's eta(C), B(C). Intervals: bootstrap
percentile over rows (or over clusters such as groups), optionally also drawing each row's y from
its own replicates (propagating the uncertainty of extracted optima into the law).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import cluster_weights, resample_weights, summarize
from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.validate import as_list, positive, public, require_columns, require_frame


def _wls(X: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted least squares for many weight vectors at once: X (n, p), y (R, n) or (n,), W (R, n) -> (R, p).
    Singular replicates (e.g. every resampled row at the same x) give NaN."""
    Y = np.broadcast_to(y, W.shape)
    XtWX = np.einsum("ni,rn,nj->rij", X, W, X)
    XtWy = np.einsum("ni,rn,rn->ri", X, W, Y)
    cond = np.linalg.cond(XtWX)
    ok = np.isfinite(cond) & (cond < 1e12)
    coef = np.full((W.shape[0], X.shape[1]), np.nan)
    if ok.any():
        coef[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    return coef


@public
def fit_log_linear(df: pd.DataFrame, y: str, xs: str | Sequence[str], *, base: float = math.e, n_boot: int = 1000,
                   level: float = 0.95, seed: int = 0, cluster: str | None = None, weights: str | None = None,
                   y_samples: np.ndarray | None = None, name: str = "log_linear", min_decades: float = 0.1) -> Fit:
    """OLS of log_base(y) on log_base of each column in xs plus an intercept.

    Params: one slope per x column (keyed by the column name) and "intercept". cluster: resample
    whole clusters (rows sharing this column's value) instead of rows. weights: a column of
    non-negative row weights. y_samples: (R, n) replicate values of y (e.g. bootstrap optima), one
    drawn per bootstrap replicate. r2 is computed in log space.

    A regressor spanning less than min_decades (default 0.1, a factor 1.26) cannot carry an exponent:
    its term is left out, its slope (and interval) is NaN with a warning, and the intercept holds it at
    its geometric mean (details["held_fixed"]); with every regressor that narrow it raises. One spanning
    less than half a decade is kept with a warning.
    """
    xs = as_list(xs)
    what = f"fit_log_linear({y} ~ {', '.join(xs)})"
    require_frame(df, what)
    require_columns(df, [y, *xs, cluster, weights], what)
    if len(df) < len(xs) + 2:
        raise AnalysisError(f"{what}: {len(df)} rows, need at least {len(xs) + 2} to fit and judge the fit")
    lb = math.log(base)
    Y = np.log(positive(df, y, what)) / lb
    logs = {x: np.log(positive(df, x, what)) / lb for x in xs}
    decades = {x: float(np.ptp(v) * lb / math.log(10)) for x, v in logs.items()}
    held = {x: float(base ** np.mean(logs[x])) for x in xs if decades[x] < min_decades}
    kept = [x for x in xs if x not in held]
    if not kept:
        raise AnalysisError(f"{what}: {', '.join(f'{x!r} spans only {decades[x]:.2f} decades' for x in xs)} "
                            f"(min_decades={min_decades}): no exponent can be fitted (the design is singular)")
    X = np.column_stack([logs[x] for x in kept] + [np.ones(len(df))])
    w = np.ones(len(df)) if weights is None else df[weights].to_numpy(float)
    coef = _wls(X, Y, w[None])[0]
    if not np.all(np.isfinite(coef)):
        raise AnalysisError(f"{what}: the design is singular (every row has the same {', '.join(xs)}?)")
    resid = Y - X @ coef
    ss_tot = np.sum(w * (Y - np.average(Y, weights=w)) ** 2)
    r2 = float(1 - np.sum(w * resid**2) / ss_tot) if ss_tot > 0 else float("nan")
    keys = [*xs, "intercept"]
    fitted = dict(zip([*kept, "intercept"], map(float, coef)))
    params = {k: fitted.get(k, float("nan")) for k in keys}
    warnings = []
    for x in xs:
        if x in held:
            warnings.append(f"{x} spans only {decades[x]:.2f} decades (< min_decades={min_decades}): its term is left "
                            f"out and its exponent is NaN; the intercept holds {x} at {held[x]:.4g}")
        elif decades[x] < 0.5:  # less than a factor ~3
            warnings.append(f"{x} spans only {decades[x]:.2f} decades: the exponent is poorly constrained")
    fit = Fit(name, params, r2=r2, n=len(df), objective=float(np.sum(w * resid**2)), warnings=warnings,
              details={"base": base, "y": y, "xs": xs, "method": "OLS in log space",
                       "objective": "weighted SSE of log y",
                       "residual_sd": float(np.sqrt(np.sum(w * resid**2) / max(len(df) - X.shape[1], 1))),
                       "held_fixed": held})
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        Wb = resample_weights(len(df), n_boot, rng) if cluster is None else \
            cluster_weights(df[cluster].to_numpy(), n_boot, rng)
        Yb = Y
        if y_samples is not None:
            ys = np.asarray(y_samples, float)
            if ys.ndim != 2 or ys.shape[1] != len(df):
                raise AnalysisError(f"{what}: y_samples must have shape (R, {len(df)}), got {ys.shape}")
            draws = ys[rng.integers(0, ys.shape[0], n_boot)]
            bad = ~(np.isfinite(draws) & (draws > 0))
            Yb = np.log(np.where(bad, df[y].to_numpy(float)[None], draws)) / lb
        samples = pd.DataFrame(_wls(X, Yb, Wb * w[None]), columns=[*kept, "intercept"])
        for x in held:
            samples[x] = np.nan
        samples = samples[keys]
        fit.samples = samples
        fit.ci, fit.se = summarize(samples, level)
        n_bad = int(samples[[*kept, "intercept"]].isna().any(axis=1).sum())
        fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level, "singular_replicates": n_bad,
                                    "resample": "clusters of " + cluster if cluster else "rows",
                                    "y_replicates": y_samples is not None}
        if n_bad > 0.1 * n_boot:
            fit.warnings.append(f"{n_bad} of {n_boot} bootstrap replicates were singular (too few distinct x)")
    return fit


@public
def fit_power_law(df: pd.DataFrame, x: str, y: str, **kwargs) -> Fit:
    """y = a * x^b by OLS of log y on log x. Params: a, b (with bootstrap CIs); r2 in log space.
    Accepts the keyword arguments of fit_log_linear (n_boot, level, seed, cluster, weights, y_samples)."""
    kwargs.setdefault("name", "power_law")
    base = kwargs.pop("base", math.e)
    fit = fit_log_linear(df, y, [x], base=base, **kwargs)
    with np.errstate(over="ignore"):  # a replicate intercept of a law the data do not determine can overflow
        fit.params = {"a": float(base ** fit.params["intercept"]), "b": fit.params[x]}
        if fit.samples is not None:
            fit.samples = pd.DataFrame({"a": base ** fit.samples["intercept"], "b": fit.samples[x]})
            fit.ci, fit.se = summarize(fit.samples, kwargs.get("level", 0.95))
    fit.details["form"] = f"{y} = a * {x}^b"
    return fit


def predict_power_law(fit: Fit, x) -> np.ndarray:
    return fit.params["a"] * np.asarray(x, float) ** fit.params["b"]


def predict_log_linear(fit: Fit, df: pd.DataFrame) -> np.ndarray:
    """y predicted by a fit_log_linear result for the x columns of df (its params hold "intercept", or a
    prefactor "a" as fit_steplaw's lr law does)."""
    base = fit.details["base"]
    lb = math.log(base)
    icpt = fit.params["intercept"] if "intercept" in fit.params else math.log(fit.params["a"]) / lb
    z = icpt + sum(fit.params[x] * np.log(df[x].to_numpy(float)) / lb for x in fit.details["xs"])
    return base**z

"""Critical batch size from steps-to-target-loss, and McCandlish's gradient-noise estimator.

- Steps/examples trade-off (McCandlish et al. 2018, arXiv 1812.06162): S(B) = S_min (1 + B_noise / B).
- Zhang et al. 2024 (arXiv 2410.21676): fit log S = log(a + b/B) to the steps needed to reach a target
  loss; the critical batch size is where S exceeds linear scaling by 20 %: a + b/B = 1.2 b/B, i.e. the
  paper's analysis code solves b - 5 a (CBS - 1.2 B0) = 0  =>  CBS = 1.2 B0 + b / (5a), with a fixed
  B0 = 256 (sequences; their batch sizes 64..16384 of 512-token sequences). That is the default here
  (b0=256, in the units of the batch column); b0=None takes the smallest batch tried instead, which is
  9-31 % below the paper's published CBS on its own data (tests/test_analysis_laws.py). The same fit
  gives the McCandlish reading S_min = a, B_noise = b/a; both are reported, labelled.
- `b_simple`: B_simple = tr(Sigma) / |G|^2 from gradient norms at two batch sizes (McCandlish App. A.1).
"""

from __future__ import annotations

import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import resample_weights, summarize
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.validate import (as_list, iter_groups, numeric, pooled_groups, positive, public, require_columns,
                               require_frame)


@public
def steps_to_target(curves: pd.DataFrame, target: float, loss: str = "val_loss", step: str = "step",
                    run: str = "run_id") -> pd.DataFrame:
    """Per run: the first step at which loss <= target, interpolated linearly in log(step) between the
    two logged points that bracket the crossing; NaN (reached=False) if never reached. Columns: run,
    steps, reached. Raises when no run logs a finite loss."""
    what = "steps_to_target"
    require_frame(curves, what)
    require_columns(curves, [loss, step, run], what)
    numeric(curves, loss, what), numeric(curves, step, what)
    if not curves[loss].notna().any():
        raise AnalysisError(f"{what}: column {loss!r} has no finite values (no run logs it)")
    rows = []
    for rid, g in curves[curves[loss].notna()].groupby(run, sort=False, observed=True):
        g = g.sort_values(step)
        s, y = g[step].to_numpy(float), g[loss].to_numpy(float)
        hit = np.flatnonzero(y <= target)
        if not hit.size:
            rows.append({run: rid, "steps": np.nan, "reached": False})
            continue
        i = hit[0]
        if i == 0 or s[i - 1] <= 0:
            val = s[i]
        else:
            t = (y[i - 1] - target) / (y[i - 1] - y[i])
            val = float(np.exp(np.log(s[i - 1]) + t * (np.log(s[i]) - np.log(s[i - 1]))))
        rows.append({run: rid, "steps": val, "reached": True})
    return pd.DataFrame(rows)


def _fit_rows(invB: np.ndarray, logS: np.ndarray, W: np.ndarray, iters: int = 50) -> np.ndarray:
    """Weighted least squares of log S = log(a + b/B) for every weight row of W; returns (R, 2) = (a, b).
    Start from the linear fit of S on 1/B, then Gauss-Newton in (log a, log b) (keeps a, b > 0)."""
    S = np.exp(logS)
    X = np.column_stack([np.ones_like(invB), invB])
    XtWX = np.einsum("ni,rn,nj->rij", X, W / S**2, X)  # weights 1/S^2 approximate log-space residuals
    XtWy = np.einsum("ni,rn,n->ri", X, W / S**2, S)
    ab = np.linalg.solve(XtWX + 1e-12 * np.eye(2), XtWy[..., None])[..., 0]
    theta = np.log(np.clip(ab, 1e-8 * S.max(), None))
    for _ in range(iters):
        a, b = np.exp(theta[:, :1]), np.exp(theta[:, 1:])
        pred = a + b * invB
        r = np.log(pred) - logS
        J = np.stack([a / pred, b * invB / pred], axis=-1)  # (R, n, 2)
        JtJ = np.einsum("rni,rn,rnj->rij", J, W, J) + 1e-10 * np.eye(2)
        Jtr = np.einsum("rni,rn,rn->ri", J, W, r)
        step = np.linalg.solve(JtJ, Jtr[..., None])[..., 0]
        theta = theta - np.clip(step, -2, 2)
    return np.exp(theta)


@public
def fit_critical_batch(df: pd.DataFrame, batch: str = "B", steps: str = "steps", *,
                       by: str | Sequence[str] | None = None, seed_col: str | None = None, b0: float | None = 256.0,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Fit S(B) = a + b/B in log space. Params: a (= S_min), b, B_noise (= b/a, McCandlish),
    CBS_zhang (= 1.2 B0 + b/(5a), Zhang et al. 2024's definition with their fixed B0 = 256: b0 is in
    the units of the batch column, so pass b0=256 * context for a batch in tokens; b0=None uses the
    smallest batch tried).

    One fit per group of `by` (e.g. model size): returns {group label: Fit}; a group that cannot be
    fitted gives an AnalysisWarning naming it. Without by, one Fit over all rows, which warns (in
    Fit.warnings) when rows repeat a batch size at different steps with no seed_col to say they are
    replicates: several groups pooled, with the columns that would separate them. Rows whose steps is
    NaN (target never reached) are dropped and counted (details["not_reached"])."""
    what = "fit_critical_batch"
    require_frame(df, what)
    require_columns(df, [batch, steps, *as_list(by), seed_col], what)
    numeric(df, steps, what)
    if not by:
        return _fit_one(df, batch, steps, seed_col, b0, n_boot, level, seed, what, "", ())
    fits, failed = {}, []
    for key, label, g in iter_groups(df, by, what):
        try:
            fits[label] = _fit_one(g, batch, steps, seed_col, b0, n_boot, level, seed, what, label, as_list(by))
        except AnalysisError as e:
            failed.append(str(e))
            pywarnings.warn(str(e), AnalysisWarning, stacklevel=3)
    if not fits:
        raise AnalysisError(f"{what}: no group could be fitted ({'; '.join(failed) or 'no rows'})")
    return fits


def _fit_one(df, batch, steps, seed_col, b0, n_boot, level, seed, what, label, by) -> Fit:
    where = f" in group {label}" if label else ""
    S_all = numeric(df, steps, what)
    d = df[np.isfinite(S_all)]
    if len(d) < 3:
        raise AnalysisError(f"{what}: {len(d)} row(s) with a finite {steps!r} (target reached){where}; need at least 3")
    B, S = positive(d, batch, what, label), positive(d, steps, what, label)
    if len(np.unique(B)) < 2:
        raise AnalysisError(f"{what}: column {batch!r} has a single value{where}; need at least two batch sizes")
    b0_used = float(B.min()) if b0 is None else float(b0)
    invB, logS = 1.0 / B, np.log(S)

    def derived(ab):
        a, b = ab[:, 0], ab[:, 1]
        return pd.DataFrame({"a": a, "b": b, "S_min": a, "B_noise": b / a, "CBS_zhang": 1.2 * b0_used + b / (5 * a)})

    est = derived(_fit_rows(invB, logS, np.ones((1, len(B)))))
    params = {k: float(v) for k, v in est.iloc[0].items()}
    resid = np.log(params["a"] + params["b"] * invB) - logS
    r2 = 1 - np.sum(resid**2) / np.sum((logS - logS.mean()) ** 2)
    warnings = []
    pooled = pooled_groups(d, batch, steps, seed_col, ignore=by, require_hint=bool(by))
    if pooled:
        warnings.append(pooled)
    if params["CBS_zhang"] > B.max():
        warnings.append(f"critical batch {params['CBS_zhang']:.3g} lies above the largest batch tried ({B.max():g}): "
                        "an extrapolation")
    if not B.min() <= b0_used <= B.max():
        warnings.append(f"B0={b0_used:g} (Zhang et al.'s reference batch) lies outside the batches tried "
                        f"[{B.min():g}, {B.max():g}]: check b0 is in the units of {batch!r}")
    fit = Fit("critical_batch", params, r2=float(r2), n=len(B), objective=float(np.sum(resid**2)), warnings=warnings,
              details={"form": "steps = a + b / B (log-space least squares)", "B0": b0_used,
                       "B0_source": "smallest batch tried" if b0 is None else
                       "b0 (Zhang et al. 2024 use 256 sequences)",
                       "S_min, B_noise": "McCandlish et al. 2018 reading of the same fit",
                       "CBS_zhang": "Zhang et al. 2024: CBS = 1.2 B0 + b / (5a), 20 % above linear scaling",
                       "not_reached": int(len(df) - len(d)), "group": label or None})
    if n_boot > 0:
        samples = derived(_fit_rows(invB, logS, resample_weights(len(B), n_boot, np.random.default_rng(seed))))
        fit.samples = samples
        fit.ci, fit.se = summarize(samples, level)
        fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level, "method": "resample rows"}
    return fit


@public
def b_simple(g2_small, g2_big, b_small: float, b_big: float, ema: float = 0.0):
    """McCandlish's simple noise scale from squared gradient norms measured at two batch sizes.

    |G|^2 = (B_b |G_Bb|^2 - B_s |G_Bs|^2) / (B_b - B_s), tr(Sigma) = (|G_Bs|^2 - |G_Bb|^2) / (1/B_s - 1/B_b);
    each is smoothed by an exponential moving average (coefficient ema) before the ratio.
    Returns (B_simple, |G|^2, tr Sigma) arrays."""
    gs, gb = np.atleast_1d(np.asarray(g2_small, float)), np.atleast_1d(np.asarray(g2_big, float))
    g2 = (b_big * gb - b_small * gs) / (b_big - b_small)
    tr = (gs - gb) / (1 / b_small - 1 / b_big)
    if ema > 0:
        g2, tr = _ema(g2, ema), _ema(tr, ema)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tr / g2, g2, tr


def _ema(x: np.ndarray, beta: float) -> np.ndarray:
    out = np.empty_like(x)
    acc = x[0]
    for i, v in enumerate(x):
        acc = beta * acc + (1 - beta) * v
        out[i] = acc
    return out

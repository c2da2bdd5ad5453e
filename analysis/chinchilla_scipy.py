"""Reference Approach 3 fitter: a plain loop of scipy L-BFGS-B runs over the same starts.

It exists to cross-check the batched fitter (same objective, same starts, independent optimiser) and
as the baseline of benchmarks/analysis_fit_bench.py. The objective is the Huber sum on log residuals
(Hoffmann et al. arXiv 2203.15556; Besiroglu et al. arXiv 2404.10102), with its analytic gradient;
`scale` multiplies it (1/delta makes it O(1); scale=1 with scipy's default tolerances reproduces the
documented premature stop).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import minimize


def huber_log_objective(x, logN, logD, logL, delta: float = 1e-3, scale: float = 1.0, weights=None):
    """(value, gradient) of scale * sum_i w_i Huber_delta(logsumexp(u_i) - log L_i);
    x = (log_A, log_B, log_E, alpha, beta); weights: per-point w_i (bootstrap counts), default 1."""
    a, b, e, alpha, beta = x
    u1, u2 = a - alpha * logN, b - beta * logD
    m = np.maximum(np.maximum(u1, u2), e)
    q1, q2, q3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
    s = q1 + q2 + q3
    r = m + np.log(s) - logL
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    c = np.clip(r, -delta, delta) / s
    if weights is not None:
        h, c = h * weights, c * weights
    f = np.sum(h)
    g = np.array([np.sum(c * q1), np.sum(c * q2), np.sum(c * q3), -np.sum(c * q1 * logN), -np.sum(c * q2 * logD)])
    return scale * f, scale * g


def fit_chinchilla_scipy(logN, logD, logL, starts: np.ndarray, *, delta: float = 1e-3, scale: float | None = None,
                         options: dict | None = None) -> dict:
    """Run L-BFGS-B from every start; returns best x, its objective (unscaled), all objectives, wall time.

    Default: objective scaled by 1/delta with tolerances ftol=1e-15, gtol=1e-10, maxiter=1000.
    """
    scale = 1.0 / delta if scale is None else scale
    options = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000} if options is None else options
    args = (np.asarray(logN, float), np.asarray(logD, float), np.asarray(logL, float), delta, scale)
    t0 = time.perf_counter()
    xs, fs, nits = [], [], []
    for x0 in np.asarray(starts, float):
        r = minimize(huber_log_objective, x0, args=args, jac=True, method="L-BFGS-B", options=options)
        xs.append(r.x)
        fs.append(r.fun / scale if np.isfinite(r.fun) else np.inf)
        nits.append(r.nit)
    wall = time.perf_counter() - t0
    fs = np.array(fs)
    best = int(np.argmin(fs))
    return {"x": xs[best], "objective": float(fs[best]), "objectives": fs, "x_all": np.array(xs),
            "n_iter": np.array(nits), "wall_s": wall}

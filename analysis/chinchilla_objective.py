"""The Chinchilla Approach 3 objective and its batched minimisation (see analysis.chinchilla).

Parameters are the log-sum-exp form's (log_A, log_B, log_E, alpha, beta), Epoch's (a, b, e, alpha, beta);
the objective is the SUM of Huber_delta(log L_hat - log L) over points, divided by delta so that it is
O(1) (Hoffmann et al. arXiv 2203.15556; Besiroglu et al. arXiv 2404.10102), with optional per-point
weights (bootstrap resampling counts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis.optimize import BatchResult, minimize_newton
from analysis.optimize.driver import MAX_BATCH

# parameter vector order, as in Epoch's code: (a, b, e, alpha, beta) with A = e^a, B = e^b, E = e^e
PARAMS = ("log_A", "log_B", "log_E", "alpha", "beta")


def huber_log_derivs(X, w, shared):
    """Objective, gradient and Hessian for rows X (S, 5) with point weights w (S, n).

    f = sum_i w_i Huber_delta(r_i) / delta,  r_i = logsumexp(u_i) - log L_i,
    u_i = (log_A - alpha log N_i, log_B - beta log D_i, log_E).  With p = softmax(u) and J = du/dtheta,
    grad r_i = J^T p and Hess r_i = J^T (diag p - p p^T) J; Huber' = clip(r, -delta, delta) and
    Huber'' = [|r| <= delta]. Written out (not autodiff) so one pass gives f, g and H for all rows.
    """
    lN, lD, lL = (v[None, :] for v in shared[:3])  # data as (1, n) rows
    delta = shared[3]
    a, b, e, alpha, beta = (X[:, i:i + 1] for i in range(5))
    u1, u2 = a - alpha * lN, b - beta * lD
    m = jnp.maximum(jnp.maximum(u1, u2), e)
    q1, q2, q3 = jnp.exp(u1 - m), jnp.exp(u2 - m), jnp.exp(e - m)
    s = q1 + q2 + q3
    r = m + jnp.log(s) - lL
    p1, p2, p3 = q1 / s, q2 / s, q3 / s
    inside = jnp.abs(r) <= delta
    f = jnp.sum(w * jnp.where(inside, 0.5 * r * r, delta * (jnp.abs(r) - 0.5 * delta)), axis=1) / delta
    c = w * jnp.clip(r, -delta, delta) / delta  # Huber'(r) / delta
    k = w * inside / delta  # Huber''(r) / delta
    grad_r = jnp.stack([p1, p2, p3, -p1 * lN, -p2 * lD], axis=-1)  # (S, n, 5) = J^T p
    g = jnp.einsum("sn,sni->si", c, grad_r)
    # sum_i k_i gr gr^T + c_i (J^T diag(p) J - gr gr^T)
    H = jnp.einsum("sn,sni,snj->sij", k - c, grad_r, grad_r)
    diag = jnp.stack([jnp.sum(c * p1, 1), jnp.sum(c * p2, 1), jnp.sum(c * p3, 1),
                      jnp.sum(c * p1 * lN * lN, 1), jnp.sum(c * p2 * lD * lD, 1)], axis=-1)
    H = H + jax.vmap(jnp.diag)(diag)
    off_a, off_b = -jnp.sum(c * p1 * lN, 1), -jnp.sum(c * p2 * lD, 1)
    H = H.at[:, 0, 3].add(off_a).at[:, 3, 0].add(off_a).at[:, 1, 4].add(off_b).at[:, 4, 1].add(off_b)
    return f, g, H


def minimize_starts(starts: np.ndarray, weights: np.ndarray, logN, logD, logL, delta: float,
                    continuation: tuple[float, ...] = (), **newton) -> BatchResult:
    """Batched trust-region Newton from every row of `starts` with per-row point weights (S, n); float64.

    continuation: multipliers m of delta for warm-up stages (e.g. (100, 10)): each start is first
    minimised with Huber scale m * delta (nearly least squares, smooth, fast from far away), then
    warm-starts the next stage; the last stage always minimises the declared objective (delta).
    Starts that a warm-up stage brings to the same point (to 1e-6, same weights) share the later
    stages: the stages restart from the point alone, so their paths from there would be identical.
    """
    x = np.asarray(starts, np.float64)
    w = np.asarray(weights, np.float64)
    # per-batch work arrays are (rows, points, 5) float64: keep them near 50 MB whatever the point count
    newton.setdefault("max_batch", int(min(MAX_BATCH, max(20, 1_300_000 // max(w.shape[1], 1)))))
    owner = np.arange(len(x))  # row of the current (deduplicated) batch that carries each start
    n_iter = np.zeros(len(x), int)
    with jax.enable_x64(True):
        data = tuple(jnp.asarray(v, jnp.float64) for v in (logN, logD, logL))
        for m in continuation:
            res = minimize_newton(huber_log_derivs, x, w, data + (jnp.float64(m * delta),), gtol=1e-9, max_iter=100,
                                  max_batch=newton["max_batch"])
            x = np.where(np.isfinite(res.f)[:, None], res.x, x)
            n_iter += res.n_iter[owner]
            keys = np.column_stack([np.round(x / 1e-6), np.unique(w, axis=0, return_inverse=True)[1].reshape(-1, 1)])
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            x, w, owner = x[first], w[first], inverse.reshape(-1)[owner]
        res = minimize_newton(huber_log_derivs, x, w, data + (jnp.float64(delta),), **newton)
    return BatchResult(x=res.x[owner], f=res.f[owner], grad_inf=res.grad_inf[owner],
                       n_iter=res.n_iter[owner] + n_iter, status=res.status[owner])

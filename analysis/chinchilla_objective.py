"""The Chinchilla Approach 3 objective, its closed-form linear part and its batched minimisation
(see analysis.chinchilla).

Parameters are the log-sum-exp form's (log_A, log_B, log_E, alpha, beta), Epoch's (a, b, e, alpha, beta);
the objective is the SUM of Huber_delta(log L_hat - log L) over points, divided by delta so that it is
O(1) (Hoffmann et al. arXiv 2203.15556; Besiroglu et al. arXiv 2404.10102), with optional per-point
weights (bootstrap resampling counts). The derivatives exist twice, in numpy (the default minimiser,
nothing to compile) and in JAX (for `backend="jax"`); JAX is imported only when that backend is used.
"""

from __future__ import annotations

import itertools

import numpy as np

from analysis.optimize import BatchResult, minimize_newton_np

# parameter vector order, as in Epoch's code: (a, b, e, alpha, beta) with A = e^a, B = e^b, E = e^e
PARAMS = ("log_A", "log_B", "log_E", "alpha", "beta")
# the non-empty subsets of (A, B, E), largest first: the active sets of the 3-coefficient NNLS
_SUBSETS = [s for k in (3, 2, 1) for s in itertools.combinations(range(3), k)]
# a coefficient the NNLS sets to zero becomes this fraction of the smallest loss (log A must be finite)
ABSENT_TERM = 1e-6


def huber_log_derivs_np(X, w, shared):
    """Objective, gradient and Hessian (numpy) for rows X (s, 5), point weights w (s, n) or None (all 1).

    f = sum_i w_i Huber_delta(r_i) / delta,  r_i = logsumexp(u_i) - log L_i,
    u_i = (log_A - alpha log N_i, log_B - beta log D_i, log_E).  With p = softmax(u) and J = du/dtheta,
    grad r_i = J^T p and Hess r_i = J^T (diag p - p p^T) J; Huber' = clip(r, -delta, delta) and
    Huber'' = [|r| <= delta]. shared = (log N, log D, log L, delta). Written out so one pass over the
    (s, n) arrays gives f, g and H; call it on blocks of ~100 rows (the arrays then stay in cache).
    """
    lN, lD, lL, delta = shared
    a, b, e, alpha, beta = (X[:, i:i + 1] for i in range(5))
    u1, u2 = a - alpha * lN, b - beta * lD
    m = np.maximum(np.maximum(u1, u2), e)
    p1, p2, p3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
    s = p1 + p2 + p3
    r = np.log(s)
    r += m
    r -= lL
    np.divide(1.0, s, out=s)
    p1 *= s
    p2 *= s
    p3 *= s
    ar = np.abs(r)
    inside = ar <= delta
    hub = np.where(inside, 0.5 * r * r, delta * (ar - 0.5 * delta))
    c = np.clip(r, -delta, delta)
    c *= 1.0 / delta  # Huber'(r) / delta
    k = inside / delta  # Huber''(r) / delta
    if w is not None:
        hub *= w
        c *= w
        k *= w
    f = hub.sum(axis=1) / delta
    G = (p1, p2, p3, -p1 * lN, -p2 * lD)  # the 5 components of grad r_i
    S = X.shape[0]
    g = np.empty((S, 5))
    H = np.empty((S, 5, 5))
    cG = [c * Gi for Gi in G]
    for i in range(5):
        g[:, i] = cG[i].sum(axis=1)
    # sum_i k_i gr gr^T + c_i (J^T diag(p) J - gr gr^T)
    kc = k - c
    for i in range(5):
        t = kc * G[i]
        for j in range(i, 5):
            H[:, i, j] = H[:, j, i] = np.einsum("sn,sn->s", t, G[j])
    H[:, 0, 0] += g[:, 0]
    H[:, 1, 1] += g[:, 1]
    H[:, 2, 2] += g[:, 2]
    H[:, 3, 3] -= np.einsum("sn,n->s", cG[3], lN)  # sum c p1 lN^2
    H[:, 4, 4] -= np.einsum("sn,n->s", cG[4], lD)
    H[:, 0, 3] += g[:, 3]
    H[:, 3, 0] += g[:, 3]
    H[:, 1, 4] += g[:, 4]
    H[:, 4, 1] += g[:, 4]
    return f, g, H


def huber_log_derivs(X, w, shared):
    """The same in JAX (jit-able): rows X (S, 5) with point weights w (S, n); shared = (log N, log D,
    log L, delta) as JAX arrays."""
    import jax
    import jax.numpy as jnp

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
    H = jnp.einsum("sn,sni,snj->sij", k - c, grad_r, grad_r)
    diag = jnp.stack([jnp.sum(c * p1, 1), jnp.sum(c * p2, 1), jnp.sum(c * p3, 1),
                      jnp.sum(c * p1 * lN * lN, 1), jnp.sum(c * p2 * lD * lD, 1)], axis=-1)
    H = H + jax.vmap(jnp.diag)(diag)
    off_a, off_b = -jnp.sum(c * p1 * lN, 1), -jnp.sum(c * p2 * lD, 1)
    H = H.at[:, 0, 3].add(off_a).at[:, 3, 0].add(off_a).at[:, 1, 4].add(off_b).at[:, 4, 1].add(off_b)
    return f, g, H


def project_linear(alpha, beta, logN, logD, logL) -> np.ndarray:
    """Start rows (G, 5) in PARAMS order: for each (alpha, beta), the (log A, log B, log E) in closed form.

    For fixed exponents L_hat = A x1 + B x2 + E (x1 = N^-alpha, x2 = D^-beta) is linear in (A, B, E), and
    the relative squared error sum_i (L_hat_i / L_i - 1)^2 (~ the squared log residual) is minimised
    over A, B, E >= 0 exactly: a 3x3 normal system per active set, the best feasible one of the seven.
    A coefficient left at zero (a term the data does not support at these exponents) is set to
    ABSENT_TERM of the smallest loss at every point, so its log stays finite.
    """
    alpha = np.atleast_1d(np.asarray(alpha, float))[:, None]
    beta = np.atleast_1d(np.asarray(beta, float))[:, None]
    lN, lD, lL = (np.asarray(v, float)[None, :] for v in (logN, logD, logL))
    G = alpha.shape[0]
    with np.errstate(over="ignore", under="ignore"):
        Z = np.stack([np.exp(-alpha * lN - lL), np.exp(-beta * lD - lL), np.broadcast_to(np.exp(-lL), (G, lL.size))],
                     axis=-1)  # (G, n, 3): relative-error design, target 1
    M = np.einsum("gni,gnj->gij", Z, Z)
    v = Z.sum(axis=1)
    n = lL.size
    best_c, best_rss = np.zeros((G, 3)), np.full(G, np.inf)
    for sub in _SUBSETS:
        idx = list(sub)
        Ms, vs = M[:, idx][:, :, idx], v[:, idx]
        with np.errstate(all="ignore"):
            d = np.sqrt(np.einsum("gii->gi", Ms))
            ev, V = np.linalg.eigh(np.nan_to_num(Ms / d[:, :, None] / d[:, None, :]))  # unit diagonal
            ok = np.all(np.isfinite(d), axis=1) & (ev[:, 0] > 1e-12 * ev[:, -1])  # not (nearly) collinear
            ev = np.where(ok[:, None], ev, 1.0)
            cs = np.einsum("gij,gj->gi", V, np.einsum("gij,gi->gj", V, vs / d) / ev) / d
            rss = n - 2 * np.sum(cs * vs, axis=1) + np.einsum("gi,gij,gj->g", cs, Ms, cs)
        better = ok & np.all(cs > 0, axis=1) & (rss < best_rss)
        best_c[np.ix_(better, idx)] = cs[better]
        best_rss[better] = rss[better]
    with np.errstate(divide="ignore"):
        logc = np.log(best_c)
    absent = np.log(ABSENT_TERM) + np.stack([np.min(lL + alpha * lN, axis=1), np.min(lL + beta * lD, axis=1),
                                             np.full(G, np.min(lL))], axis=1)
    logc = np.where(best_c > 0, logc, absent)
    return np.column_stack([logc, alpha[:, 0], beta[:, 0]])


def _solver(backend: str):
    if backend == "numpy":
        def solve(x, w, data, delta, **opts):
            opts.pop("max_batch", None)
            opts.pop("chunk_len", None)
            return minimize_newton_np(huber_log_derivs_np, x, w, data + (float(delta),), **opts)
        return solve
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        from analysis.optimize.driver import MAX_BATCH
        from analysis.optimize.newton import minimize_newton

        def solve(x, w, data, delta, **opts):
            opts.pop("block", None)
            w = np.ones((len(x), data[0].size)) if w is None else w
            # per-batch work arrays are (rows, points, 5) float64: keep them near 50 MB whatever the point count
            opts.setdefault("max_batch", int(min(MAX_BATCH, max(20, 1_300_000 // max(w.shape[1], 1)))))
            with jax.enable_x64(True):
                shared = tuple(jnp.asarray(v, jnp.float64) for v in data) + (jnp.float64(delta),)
                return minimize_newton(huber_log_derivs, x, w, shared, **opts)
        return solve
    raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")


def minimize_starts(starts: np.ndarray, weights, logN, logD, logL, delta: float,
                    continuation: tuple[float, ...] = (), *, backend: str = "numpy", **newton) -> BatchResult:
    """Batched trust-region Newton from every row of `starts`, per-row point weights (S, n) or None (all
    1); float64. backend: "numpy" (analysis.optimize.minimize_newton_np, no compilation) or "jax"
    (analysis.optimize.minimize_newton). `newton`: the minimiser's settings (max_iter, gtol, ...).

    continuation: multipliers m of delta for warm-up stages (e.g. (100, 10)): each start is first
    minimised with Huber scale m * delta (nearly least squares, smooth, fast from far away), then
    warm-starts the next stage; the last stage always minimises the declared objective (delta).
    Starts that a warm-up stage brings to the same point (to 1e-6, same weights) share the later
    stages: the stages restart from the point alone, so their paths from there would be identical.
    """
    solve = _solver(backend)
    x = np.asarray(starts, np.float64)
    w = None if weights is None else np.asarray(weights, np.float64)
    data = tuple(np.asarray(v, np.float64) for v in (logN, logD, logL))
    owner = np.arange(len(x))  # row of the current (deduplicated) batch that carries each start
    n_iter = np.zeros(len(x), int)
    stage = {k: v for k, v in newton.items() if k in ("block", "max_batch")}
    for m in continuation:
        res = solve(x, w, data, m * delta, gtol=1e-9, max_iter=100, **stage)
        x = np.where(np.isfinite(res.f)[:, None], res.x, x)
        n_iter += res.n_iter[owner]
        keys = np.round(x / 1e-6)
        if w is not None:
            keys = np.column_stack([keys, np.unique(w, axis=0, return_inverse=True)[1].reshape(-1, 1)])
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        x, owner = x[first], inverse.reshape(-1)[owner]
        w = None if w is None else w[first]
    res = solve(x, w, data, delta, **newton).take(owner)
    res.n_iter = res.n_iter + n_iter
    return res

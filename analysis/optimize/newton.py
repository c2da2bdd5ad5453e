"""Batched damped Newton for small smooth problems with an analytic Hessian.

Each iteration takes the step  p = -V diag(1 / (|w| + lam)) V^T g  from the eigendecomposition
H = V diag(w) V^T: Newton's step where the curvature is positive, a step along |curvature| where it
is negative (the "saddle-free" Newton of Dauphin et al. 2014, arXiv 1406.2572), damped by a
Levenberg-Marquardt parameter lam that shrinks after good steps and grows after bad ones (Nocedal &
Wright, "Numerical Optimization", 2nd ed., section 4 and 10.3). Steps are also capped at `max_step` in
the infinity norm. Near the optimum lam -> 0 and convergence is quadratic, which is what the
Chinchilla objective needs: its Hessian has condition number ~1e11 (notes/scaling_laws.md section 2),
where first-order methods (L-BFGS included) crawl along the A, B valley for hundreds of iterations.

Stopping (absolute, so scale the objective to O(1)): max|g| <= gtol; or `patience` iterations that
make no progress (an accepted step lowering f by at most ftol * max(1, |f|), or a rejected step too
small to change x); or max_iter. Rejected steps of useful size only raise lam and never stop the run:
near the kinks of a Huber objective the quadratic model can be poor for several iterations.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from analysis.optimize.driver import CONVERGED_FTOL, CONVERGED_GTOL, FAILED, RUNNING, BatchResult, run_compacted

_CACHE: dict[Any, Any] = {}


def _programs(derivs: Callable, gtol: float, ftol: float, patience: int, max_step: float, chunk_len: int):
    key = (derivs, gtol, ftol, patience, max_step, chunk_len)
    if key in _CACHE:
        return _CACHE[key]

    def init(x, aux, shared):
        f, g, H = derivs(x, aux, shared)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g), axis=1)
        scale = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)), axis=1)
        n = x.shape[0]
        return dict(x=x, f=f, g=g, H=H, lam=1e-3 * scale + 1e-8, stall=jnp.zeros(n, jnp.int32),
                    it=jnp.zeros(n, jnp.int32), status=jnp.where(finite, RUNNING, FAILED).astype(jnp.int32))

    def iteration(st, aux, shared):
        x, f, g, H, lam = st["x"], st["f"], st["g"], st["H"], st["lam"]
        live = st["status"] == RUNNING
        w, V = jnp.linalg.eigh(H)
        aw = jnp.abs(w)
        gv = jnp.einsum("sij,si->sj", V, g)
        p = -jnp.einsum("sij,sj->si", V, gv / (aw + lam[:, None]))
        p = p * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(p), axis=1), 1e-300))[:, None]
        pv = jnp.einsum("sij,si->sj", V, p)
        predicted = -(jnp.sum(g * p, axis=1) + 0.5 * jnp.sum(aw * pv * pv, axis=1))
        f_new, g_new, H_new = derivs(x + p, aux, shared)
        ok = live & jnp.isfinite(f_new) & (f_new < f) & jnp.all(jnp.isfinite(g_new), axis=1)
        ratio = (f - f_new) / jnp.maximum(predicted, 1e-300)
        lam = jnp.where(ok, jnp.where(ratio > 0.75, lam / 4, jnp.where(ratio < 0.25, lam * 2, lam)), lam * 4)
        # no progress: an accepted step that barely lowers f, or a rejected step too small to move x
        gain = jnp.where(ok, f - f_new, 0.0)
        tiny = jnp.max(jnp.abs(p), axis=1) <= 1e-14 * (1.0 + jnp.max(jnp.abs(x), axis=1))
        progress = ok & (gain > ftol * jnp.maximum(1.0, jnp.abs(f)))
        stall = jnp.where(progress, 0, jnp.where(ok | tiny, st["stall"] + 1, st["stall"]))
        sel = lambda a, b: jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        x, f, g, H = sel(x + p, x), sel(f_new, f), sel(g_new, g), sel(H_new, H)
        status = jnp.where(jnp.max(jnp.abs(g), axis=1) <= gtol, CONVERGED_GTOL,
                           jnp.where(stall >= patience, CONVERGED_FTOL, RUNNING))
        status = jnp.where(live, status, st["status"]).astype(jnp.int32)
        return dict(x=x, f=f, g=g, H=H, lam=lam, stall=stall, it=st["it"] + live, status=status)

    def chunk(st, aux, shared):
        return jax.lax.fori_loop(0, chunk_len, lambda _, s: iteration(s, aux, shared), st)

    _CACHE[key] = (jax.jit(init), jax.jit(chunk))
    return _CACHE[key]


def minimize_newton(derivs: Callable, x0, aux=None, shared=None, *, gtol: float = 1e-10, ftol: float = 1e-15,
                    patience: int = 8, max_iter: int = 500, max_step: float = 2.0,
                    chunk_len: int = 10) -> BatchResult:
    """Minimise row-wise: derivs(X (S,P), aux, shared) -> (f (S,), g (S,P), H (S,P,P)), batched over rows.

    `aux` is a pytree whose leaves have leading axis S (per-problem data such as bootstrap weights);
    `shared` is a pytree of data common to all problems (the observations).
    Pass the same `derivs` object on repeated calls to reuse the compiled programs. max_iter is
    rounded up to a multiple of chunk_len.
    """
    x0 = np.asarray(x0)
    if aux is None:
        aux = np.zeros((x0.shape[0],), x0.dtype)
    init, chunk = _programs(derivs, gtol, ftol, patience, max_step, chunk_len)
    return run_compacted(init, chunk, x0, aux, shared, max_iter=max_iter)

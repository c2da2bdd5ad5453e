"""Batched trust-region Newton in numpy: the algorithm of analysis.optimize.newton, without compilation.

Same iteration, radius rule and stopping tests as `minimize_newton` (saddle-free |eigenvalue| model
inside a trust region, lam by bisection in log lam; Nocedal & Wright 2nd ed. Alg. 4.1; Dauphin et al.
arXiv 1406.2572), run on the host: every iteration works on the still-running rows only, and the
objective is evaluated in blocks of `block` rows (arrays of block x points stay in cache: on a 2-core
CPU, 64-256 rows of 240 points run ~5x faster than one 2,000-row pass). Nothing is compiled, so the
first call costs what every call costs; for a few thousand small problems on a CPU this is faster than
the jitted version cold, and as fast warm. On an accelerator, or for batches of 10^5 problems, use
`minimize_newton`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analysis.optimize.result import (CONVERGED_FTOL, CONVERGED_GTOL, FAILED, MAX_ITER, RUNNING,
                                      BatchResult)

_BISECTIONS = 40


def _lam_for_radius(gv: np.ndarray, aw: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Smallest lam >= ~0 with ||p(lam)|| <= radius, p_j = gv_j / (|w_j| + lam); bisection in log lam."""

    def norm(lam):
        return np.sqrt(np.sum((gv / (aw + lam[:, None])) ** 2, axis=1))

    floor = 1e-12 * np.max(aw, axis=1) + np.finfo(aw.dtype).tiny
    lo = np.log(floor)
    hi = np.log(np.sqrt(np.sum(gv**2, axis=1)) / radius + floor)  # ||p|| <= ||g|| / lam
    short = norm(floor) <= radius
    todo = np.flatnonzero(~short)
    if todo.size:
        g2, a2, r2, lo, hi = gv[todo], aw[todo], radius[todo], lo[todo], hi[todo]
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            too_long = np.sqrt(np.sum((g2 / (a2 + np.exp(mid)[:, None])) ** 2, axis=1)) > r2
            lo, hi = np.where(too_long, mid, lo), np.where(too_long, hi, mid)
        floor = floor.copy()
        floor[todo] = np.exp(hi)
    return floor


def evaluate_blocks(derivs: Callable, x: np.ndarray, aux, shared, block: int):
    """derivs(x rows, aux rows or None, shared) -> (f, g, H) on blocks of `block` rows, concatenated."""
    n, P = x.shape
    if n <= block:
        return derivs(x, aux, shared)
    f, g, H = np.empty(n, x.dtype), np.empty((n, P), x.dtype), np.empty((n, P, P), x.dtype)
    for i in range(0, n, block):
        sl = slice(i, i + block)
        f[sl], g[sl], H[sl] = derivs(x[sl], None if aux is None else aux[sl], shared)
    return f, g, H


def minimize_newton_np(derivs: Callable, x0, aux=None, shared=None, *, gtol: float = 1e-10, ftol: float = 1e-15,
                       patience: int = 8, max_iter: int = 500, radius: float = 1.0, max_radius: float = 10.0,
                       block: int = 128) -> BatchResult:
    """Minimise row-wise: derivs(X (s, P), aux (s, ...) or None, shared) -> (f (s,), g (s, P), H (s, P, P)).

    aux: None or an array with leading axis S (per-problem data such as bootstrap weights), sliced with
    the rows; shared: passed through. Settings and stopping rules as in `minimize_newton` (absolute:
    scale the objective to O(1)): max|g| <= gtol; `patience` iterations without progress (an accepted
    step lowering f by at most ftol * max(1, |f|), or a step too small to change x); or max_iter.
    """
    x = np.array(x0, dtype=float)
    S = x.shape[0]
    aux = None if aux is None else np.asarray(aux)
    eps = np.finfo(x.dtype).eps
    with np.errstate(all="ignore"):  # far starts overflow exp / give inf objectives: those rows fail or shrink
        f, g, H = evaluate_blocks(derivs, x, aux, shared, block)
        finite = np.isfinite(f) & np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(H), axis=(1, 2))
        rad = np.full(S, float(radius))
        stall = np.zeros(S, np.int64)
        it = np.zeros(S, np.int64)
        status = np.where(~finite, FAILED, np.where(np.max(np.abs(g), axis=1) <= gtol, CONVERGED_GTOL, RUNNING))
        act = np.flatnonzero(status == RUNNING)
        while act.size:
            xa, fa, ga, ra = x[act], f[act], g[act], rad[act]
            w, V = np.linalg.eigh(H[act])
            aw = np.abs(w)
            gv = np.einsum("sij,si->sj", V, ga)
            pv = -gv / (aw + _lam_for_radius(gv, aw, ra)[:, None])
            p = np.einsum("sij,sj->si", V, pv)
            p_norm = np.sqrt(np.sum(p * p, axis=1))
            predicted = -(np.sum(gv * pv, axis=1) + 0.5 * np.sum(aw * pv * pv, axis=1))
            f_new, g_new, H_new = evaluate_blocks(derivs, xa + p, None if aux is None else aux[act], shared, block)
            fin = np.isfinite(f_new) & np.all(np.isfinite(g_new), axis=1) & np.all(np.isfinite(H_new), axis=(1, 2))
            ratio = np.where(fin, (fa - f_new) / np.maximum(predicted, np.finfo(x.dtype).tiny), -1.0)
            ok = fin & (f_new < fa)
            grow = (ratio > 0.75) & (p_norm > 0.9 * ra)
            rad[act] = np.where(ratio < 0.25, 0.25 * p_norm, np.where(grow, np.minimum(2 * ra, max_radius), ra))
            gain = np.where(ok, fa - f_new, 0.0)
            tiny = p_norm <= 100 * eps * (1.0 + np.max(np.abs(xa), axis=1))
            progress = ok & (gain > ftol * np.maximum(1.0, np.abs(fa)))
            st = np.where(progress, 0, np.where(ok | tiny, stall[act] + 1, stall[act]))
            stall[act] = st
            acc = act[ok]
            x[acc], f[acc], g[acc], H[acc] = (xa + p)[ok], f_new[ok], g_new[ok], H_new[ok]
            it[act] += 1
            code = np.where(np.max(np.abs(g[act]), axis=1) <= gtol, CONVERGED_GTOL,
                            np.where(st >= patience, CONVERGED_FTOL,
                                     np.where(it[act] >= max_iter, MAX_ITER, RUNNING)))
            status[act] = code
            act = act[code == RUNNING]
    status[~np.isfinite(f)] = FAILED
    return BatchResult(x=x, f=f, grad_inf=np.max(np.abs(g), axis=1), n_iter=it, status=status)

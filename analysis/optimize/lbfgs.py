"""Batched L-BFGS in JAX for scalar objectives without a Hessian (vmapped over problems).

Algorithm (Nocedal & Wright, "Numerical Optimization", 2nd ed., Alg. 7.4 two-loop recursion and
Alg. 3.1 backtracking): direction from the last `history` (s, y) pairs, Armijo backtracking with a
safeguarded quadratic interpolation, pairs with s.y <= 0 skipped, memory cleared after a failed
search. Stopping is absolute (scale the objective to O(1): relative
tests stall on tiny objectives): max|g| <= gtol, or `patience` iterations without a
decrease larger than ftol * max(1, |f|), or max_iter.

On ill-conditioned problems such as the 5-parameter Chinchilla fit (condition ~1e11) this needs
hundreds of iterations; `minimize_newton` is the default there and this is the cross-check.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from analysis.optimize.driver import run_compacted
from analysis.optimize.result import CONVERGED_FTOL, CONVERGED_GTOL, FAILED, RUNNING, BatchResult

_CACHE: dict[Any, Any] = {}


def _two_loop(g, S, Y, rho):
    """H_k g by the two-loop recursion; S, Y are (m, P), oldest first; empty slots have rho = 0."""
    q, alphas = g, []
    for i in range(S.shape[0] - 1, -1, -1):
        a = rho[i] * jnp.dot(S[i], q)
        q = q - a * Y[i]
        alphas.append(a)
    alphas = alphas[::-1]
    yy = jnp.dot(Y[-1], Y[-1])
    gamma = jnp.where(rho[-1] > 0, jnp.dot(S[-1], Y[-1]) / jnp.where(yy > 0, yy, 1.0), 1.0)
    r = gamma * q
    for i in range(S.shape[0]):
        r = r + S[i] * (alphas[i] - rho[i] * jnp.dot(Y[i], r))
    return r


def _programs(fun: Callable, history: int, gtol: float, ftol: float, patience: int, max_ls: int, chunk_len: int):
    key = (fun, history, gtol, ftol, patience, max_ls, chunk_len)
    if key in _CACHE:
        return _CACHE[key]
    value_and_grad = jax.value_and_grad(fun)

    def safe_f(x, aux, shared):
        f = fun(x, aux, shared)
        return jnp.where(jnp.isfinite(f), f, jnp.inf)

    def init(x, aux, shared):
        f, g = value_and_grad(x, aux, shared)
        z = jnp.zeros((history, x.shape[0]), x.dtype)
        ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        return dict(x=x, f=f, g=g, S=z, Y=z, rho=jnp.zeros(history, x.dtype), stall=jnp.int32(0),
                    it=jnp.int32(0), status=jnp.where(ok, RUNNING, FAILED).astype(jnp.int32))

    def iteration(st, aux, shared):
        x, f, g, S, Y, rho = st["x"], st["f"], st["g"], st["S"], st["Y"], st["rho"]
        d = -_two_loop(g, S, Y, rho)
        gd = jnp.dot(g, d)
        restart = ~(gd < 0) | ~jnp.all(jnp.isfinite(d))
        d = jnp.where(restart, -g / jnp.maximum(jnp.max(jnp.abs(g)), 1.0), d)
        gd = jnp.where(restart, jnp.dot(g, d), gd)

        def too_high(c):
            t, ft, k = c
            return (ft > f + 1e-4 * t * gd) & (k < max_ls)

        def backtrack(c):
            t, ft, k = c
            denom = 2.0 * (ft - f - gd * t)
            t_q = jnp.where(jnp.isfinite(ft) & (denom > 0), -gd * t * t / denom, 0.1 * t)
            t_new = jnp.clip(t_q, 0.1 * t, 0.5 * t)
            return t_new, safe_f(x + t_new * d, aux, shared), k + 1

        t, _, _ = jax.lax.while_loop(too_high, backtrack, (jnp.asarray(1.0, x.dtype), safe_f(x + d, aux, shared), 0))
        f_new, g_new = value_and_grad(x + t * d, aux, shared)
        ok = jnp.isfinite(f_new) & (f_new <= f + 1e-4 * t * gd)
        s, y = t * d, g_new - g
        sy = jnp.dot(s, y)
        keep = ok & (sy > 1e-12 * jnp.sqrt(jnp.dot(s, s) * jnp.dot(y, y)))
        S = jnp.where(keep, jnp.roll(S, -1, axis=0).at[-1].set(s), S)
        Y = jnp.where(keep, jnp.roll(Y, -1, axis=0).at[-1].set(y), Y)
        rho = jnp.where(keep, jnp.roll(rho, -1).at[-1].set(1.0 / jnp.where(sy > 0, sy, 1.0)), rho)
        rho = jnp.where(ok | restart, rho, 0.0)
        gain = jnp.where(ok, f - f_new, 0.0)
        stall = jnp.where(gain > ftol * jnp.maximum(1.0, jnp.abs(f)), 0, st["stall"] + 1)
        x, f, g = jnp.where(ok, x + t * d, x), jnp.where(ok, f_new, f), jnp.where(ok, g_new, g)
        status = jnp.where(jnp.max(jnp.abs(g)) <= gtol, CONVERGED_GTOL,
                           jnp.where((stall >= patience) | (~ok & restart), CONVERGED_FTOL, RUNNING))
        return dict(x=x, f=f, g=g, S=S, Y=Y, rho=rho, stall=stall, it=st["it"] + 1, status=status.astype(jnp.int32))

    def frozen(st, aux, shared):
        new = iteration(st, aux, shared)
        return jax.tree.map(lambda a, b: jnp.where(st["status"] == RUNNING, a, b), new, st)

    def chunk(st, aux, shared):
        return jax.lax.fori_loop(0, chunk_len, lambda _, s: frozen(s, aux, shared), st)

    batched = dict(in_axes=(0, 0, None))
    _CACHE[key] = (jax.jit(jax.vmap(init, **batched)), jax.jit(jax.vmap(chunk, **batched)))
    return _CACHE[key]


def minimize_lbfgs(fun: Callable, x0, aux=None, shared=None, *, history: int = 10, gtol: float = 1e-9,
                   ftol: float = 1e-15, patience: int = 5, max_iter: int = 2000, max_ls: int = 30,
                   chunk_len: int = 20) -> BatchResult:
    """Minimise fun(x (P,), aux_i, shared) -> scalar from every row of x0.

    aux leaves have leading axis S (one slice per problem); shared is common to all problems."""
    x0 = np.asarray(x0)
    if aux is None:
        aux = np.zeros((x0.shape[0],), x0.dtype)
    init, chunk = _programs(fun, history, gtol, ftol, patience, max_ls, chunk_len)
    return run_compacted(init, chunk, x0, aux, shared, max_iter=max_iter)

"""Chinchilla Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to (N, D, loss) rows.

Sources: Hoffmann et al. 2022 (arXiv 2203.15556, Approach 3, App. D.2); Besiroglu et al. 2024,
"Chinchilla Scaling: A replication attempt" (arXiv 2404.10102, epoch-research/analyzing-chinchilla).
Method:
- log-sum-exp form  log L_hat = logsumexp(log_A - alpha log N, log_B - beta log D, log_E)  (keeps A, B, E > 0);
- objective: the SUM over points of Huber_delta(log L_hat - log L), delta = 1e-3 (Epoch's default, a
  modelling choice: with log residuals of ~1e-2 it makes the loss nearly least absolute deviations; the
  share of points in the quadratic zone |r| <= delta is reported, with a warning below QUADRATIC_WARN),
  multiplied by 1/delta so it is O(1) and absolute stopping tests are meaningful (the premature stop
  of a single L-BFGS run from Hoffmann's values comes from a tiny, badly scaled objective);
- starts (Epoch's 4,500-point grid by default): with linear="project" (default) each start keeps its
  (alpha, beta) and takes the (log_A, log_B, log_E) that solve the linear part in closed form (for
  fixed exponents L_hat is linear in A, B, E: a nonnegative least-squares fit of the relative errors,
  chinchilla_objective.project_linear), so starts sharing (alpha, beta) are one start: Epoch's grid
  becomes 25. linear="given" keeps every start's own linear part (the 4,500-start multistart as
  Epoch ran it);
- every (distinct) start is minimised with batched trust-region Newton with the analytic Hessian
  (numpy, nothing compiled: analysis.optimize.minimize_newton_np; backend="jax" for the jitted
  version), after two warm-up stages with a 100x and 10x larger delta (a continuation: the objective
  is then nearly least squares and Newton crosses the far regions of the grid in few steps; starts
  that a stage brings to the same point share the next stages; the last stage minimises exactly the
  declared objective); the lowest objective is kept, then re-polished from itself (a genuine optimum
  does not move);
- bootstrap: resample the points, refit every replicate from the best fit and the next-best
  distinct local minima of the starts, all replicates in one batched call.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd

from analysis.bootstrap import resample_weights, summarize
from analysis.chinchilla_objective import (PARAMS, huber_log_derivs, huber_log_derivs_np,  # noqa: F401 (re-exported)
                                           minimize_starts, project_linear)
from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.validate import need_points, positive, public, require_columns, require_frame

__all__ = ["EPOCH_GRID", "HOFFMANN_ROUNDED", "HOFFMANN_UNROUNDED", "PARAMS", "chinchilla_loss", "compute_optimal",
           "compute_optimal_table", "fit_chinchilla", "grid_starts", "huber_log_derivs", "huber_log_derivs_np",
           "minimize_starts", "project_linear", "to_params", "to_vector"]

EPOCH_GRID = {"log_A": [0, 5, 10, 15, 20, 25], "log_B": [0, 5, 10, 15, 20, 25], "log_E": [-1, -0.5, 0, 0.5, 1],
              "alpha": [0, 0.5, 1.0, 1.5, 2.0], "beta": [0, 0.5, 1.0, 1.5, 2.0]}
SMALL_GRID = {"log_A": [2, 6, 12], "log_B": [2, 8, 14], "log_E": [-1, 0, 1], "alpha": [0.1, 0.4, 1.0],
              "beta": [0.1, 0.4, 1.0]}
HOFFMANN_ROUNDED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
HOFFMANN_UNROUNDED = {"E": float(np.exp(0.5267228)), "A": float(np.exp(6.0073404)), "B": float(np.exp(6.0179186)),
                      "alpha": 0.33917084, "beta": 0.2849083}
CONTINUATION = (100.0, 10.0)  # warm-up stages at 100 delta and 10 delta before the declared delta
AT_BEST_RTOL = 1e-6  # a start "reached the best" when its objective is within this relative gap
# max |gradient| of the scaled objective above which a solution is reported as not converged; at a
# true optimum the Huber kinks leave ~1e-8..1e-6 (scipy's L-BFGS-B stops at the same objective with 1e-5)
GRAD_WARN = 1e-4
# below this share of points in the Huber quadratic zone (|log residual| <= delta) the fit is nearly L1
QUADRATIC_WARN = 0.05
EXPONENT_MAX = 3.0  # fitted alpha or beta beyond this (Epoch's grid stops at 2) gets a warning


def grid_starts(grid: dict | str = "epoch") -> np.ndarray:
    """(S, 5) start vectors in PARAMS order from a grid dict, or 'epoch' (4,500) / 'small' (243)."""
    if isinstance(grid, str):
        grid = {"epoch": EPOCH_GRID, "small": SMALL_GRID}[grid]
    return np.array(list(itertools.product(*(grid[k] for k in PARAMS))), dtype=float)


def to_vector(p: dict) -> np.ndarray:
    """(E, A, B, alpha, beta) dict -> PARAMS-ordered vector."""
    return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]], dtype=float)


def to_params(x: np.ndarray) -> dict[str, np.ndarray | float]:
    """PARAMS-ordered vector(s) (..., 5) -> E, A, B, alpha, beta and the compute-optimal exponents."""
    x = np.asarray(x, float)
    A, B, E, alpha, beta = np.exp(x[..., 0]), np.exp(x[..., 1]), np.exp(x[..., 2]), x[..., 3], x[..., 4]
    out = {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}
    with np.errstate(all="ignore"):
        out["N_opt_exponent"] = beta / (alpha + beta)  # "a" in Hoffmann eq. 4
        out["D_opt_exponent"] = alpha / (alpha + beta)  # "b"
        out["G"] = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def chinchilla_loss(params: dict, N, D) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]


def compute_optimal(params: dict, C) -> tuple[np.ndarray, np.ndarray]:
    """Hoffmann eq. 4 under C = 6ND: N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G.

    Works on scalars or on arrays of bootstrap replicates (params values broadcast against C)."""
    C = np.asarray(C, float)
    a, b = params["alpha"], params["beta"]
    G = (a * params["A"] / (b * params["B"])) ** (1.0 / (a + b))
    return G * (C / 6) ** (b / (a + b)), (C / 6) ** (a / (a + b)) / G


def compute_optimal_table(fit: Fit, budgets, level: float = 0.95) -> pd.DataFrame:
    """N_opt, D_opt and tokens/param at each budget, with bootstrap percentile intervals when available."""
    rows = []
    for C in np.atleast_1d(np.asarray(budgets, float)):
        n, d = compute_optimal(fit.params, C)
        row = {"C": C, "N_opt": float(n), "D_opt": float(d), "tokens_per_param": float(d / n)}
        if fit.samples is not None and len(fit.samples):
            ns, ds = compute_optimal({k: fit.samples[k].to_numpy() for k in ("E", "A", "B", "alpha", "beta")}, C)
            q = [(1 - level) / 2, (1 + level) / 2]
            for name, s in (("N_opt", ns), ("D_opt", ds), ("tokens_per_param", ds / ns)):
                s = s[np.isfinite(s)]
                row[name + "_lo"], row[name + "_hi"] = np.quantile(s, q) if s.size else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _start_matrix(starts) -> np.ndarray:
    if isinstance(starts, str):
        if starts == "hoffmann":
            return to_vector(HOFFMANN_ROUNDED)[None]
        if starts not in ("epoch", "small"):
            raise AnalysisError(f"fit_chinchilla: starts={starts!r} must be 'epoch', 'small', 'hoffmann', "
                                "a dict of grids, a list of parameter dicts or an (S, 5) array")
        return grid_starts(starts)
    if isinstance(starts, dict):
        return grid_starts(starts)
    if isinstance(starts, (list, tuple)) and starts and isinstance(starts[0], dict):
        return np.stack([to_vector(p) for p in starts])
    x = np.atleast_2d(np.asarray(starts, float))
    if x.shape[1] != 5:
        raise AnalysisError(f"fit_chinchilla: starts must have 5 columns {PARAMS}, got shape {x.shape}")
    return x


def _distinct_minima(x: np.ndarray, f: np.ndarray, k: int) -> np.ndarray:
    """Up to k converged points with the lowest objectives, at least 1e-3 apart (infinity norm)."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]):
            break
        if all(np.max(np.abs(x[i] - c)) > 1e-3 for c in chosen):
            chosen.append(x[i])
        if len(chosen) == k:
            break
    return np.array(chosen)


@public
def fit_chinchilla(df: pd.DataFrame, n: str = "N", d: str = "D", loss: str = "loss", *, delta: float = 1e-3,
                   starts="epoch", linear: str = "project", n_boot: int = 1000, boot_starts: int = 2,
                   level: float = 0.95, seed: int = 0, max_iter: int = 500, backend: str = "numpy") -> Fit:
    """Approach 3 fit of loss = E + A/N^alpha + B/D^beta on the rows of df (N, D, loss columns > 0).

    delta: the Huber scale on log residuals (Epoch's 1e-3; a modelling choice, see the module doc).
    starts: 'epoch' (Epoch's 4,500-point grid, default), 'small' (243 points), 'hoffmann' (one start
    at Hoffmann's rounded values), a grid dict over PARAMS, parameter dicts or an (S, 5) array.
    linear: 'project' (each start's log_A, log_B, log_E solved in closed form for its alpha, beta;
    starts sharing alpha, beta coincide) or 'given' (the starts as they are).
    backend: 'numpy' (no compilation) or 'jax' (jitted; for accelerators and very large bootstraps).
    Returns a Fit with E, A, B, alpha, beta, N_opt_exponent (a), D_opt_exponent (b), G; objective =
    the Huber sum (unscaled); r2 of log loss; bootstrap intervals from n_boot replicates;
    details["quadratic_zone"]: the points with |log residual| <= delta at the optimum.
    """
    what = "fit_chinchilla"
    require_frame(df, what)
    require_columns(df, [n, d, loss], what)
    if not (np.isfinite(delta) and delta > 0):
        raise AnalysisError(f"{what}: delta must be a positive number, got {delta!r}")
    if linear not in ("project", "given"):
        raise AnalysisError(f"{what}: linear={linear!r} must be 'project' or 'given'")
    if backend not in ("numpy", "jax"):
        raise AnalysisError(f"{what}: backend={backend!r} must be 'numpy' or 'jax'")
    N, D, L = positive(df, n, what), positive(df, d, what), positive(df, loss, what)
    need_points(len(N), 6, what)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    X0 = _start_matrix(starts)
    t0 = time.perf_counter()
    if linear == "project":  # the start's own log_A, log_B, log_E are replaced: only (alpha, beta) count
        ab, owner = np.unique(X0[:, 3:], axis=0, return_inverse=True)
        X1 = project_linear(ab[:, 0], ab[:, 1], logN, logD, logL)
    else:
        X1, owner = np.unique(X0, axis=0, return_inverse=True)
    owner = owner.reshape(-1)
    distinct = minimize_starts(X1, None, logN, logD, logL, delta, CONTINUATION, backend=backend, max_iter=max_iter)
    res = distinct.take(owner)  # per start of X0
    finite = np.isfinite(res.f)
    if not finite.any():
        raise AnalysisError(f"{what}: no start reached a finite objective")
    best = int(np.nanargmin(np.where(finite, res.f, np.nan)))
    f_best = res.f[best]
    at_best = int(np.sum(res.f <= f_best * (1 + AT_BEST_RTOL)))
    distinct_at_best = int(np.sum(distinct.f <= f_best * (1 + AT_BEST_RTOL)))
    # restart from the solution: a genuine optimum does not move and has a tiny gradient
    polish = minimize_starts(res.x[best:best + 1], None, logN, logD, logL, delta, backend=backend, max_iter=max_iter)
    x_best = polish.x[0] if polish.f[0] <= f_best else res.x[best]
    moved = (f_best - polish.f[0]) / f_best
    f_best = min(f_best, polish.f[0])
    wall = time.perf_counter() - t0

    params = to_params(x_best)
    resid = np.log(chinchilla_loss(params, N, D)) - logL
    r2 = 1 - np.sum(resid**2) / np.sum((logL - logL.mean()) ** 2)
    n_quad = int(np.sum(np.abs(resid) <= delta))
    warnings = []
    if distinct_at_best <= 2 and len(X1) > 2:
        warnings.append(f"only {distinct_at_best} of {len(X1)} distinct starts ({at_best} of {len(X0)} starts) "
                        "reached the best objective: the optimum is fragile")
    if moved > 1e-9:
        warnings.append(f"restarting from the best point lowered the objective by {moved:.1e} (relative): "
                        "the multistart had not converged")
    if polish.grad_inf[0] > GRAD_WARN:
        warnings.append(f"gradient at the optimum is {polish.grad_inf[0]:.2g} (scaled objective): not converged")
    if not all(0 < params[k] < EXPONENT_MAX for k in ("alpha", "beta")):
        warnings.append(f"alpha = {params['alpha']:.3g}, beta = {params['beta']:.3g}: an exponent outside "
                        f"(0, {EXPONENT_MAX:g}); the objective may decrease without bound along it (a term "
                        "fitted as a step or a constant), so the estimates are not identified")
    for name, v in (("N", N), ("D", D)):
        decades = np.log10(v.max() / v.min())
        if decades < 2:
            warnings.append(f"{name} spans only {decades:.1f} decades: alpha and beta are poorly identified")
    if n_quad < QUADRATIC_WARN * len(N):
        warnings.append(f"only {n_quad} of {len(N)} points ({n_quad / len(N):.1%}) have |log residual| <= "
                        f"delta = {delta:g} (median {np.median(np.abs(resid)):.2g}): the Huber loss is nearly "
                        "least absolute deviations here; delta is a modelling choice, compare a larger one")
    details = {"objective": "sum of Huber_delta(log L_hat - log L)", "delta": delta, "reduction": "sum",
               "optimizer": f"batched trust-region Newton (analytic Hessian, {backend}), objective scaled by "
                            f"1/delta, continuation in delta x {CONTINUATION} then delta",
               "linear": linear, "backend": backend,
               "tolerances": {"gtol_scaled": 1e-10, "ftol": 1e-15, "max_iter": max_iter},
               "n_starts": len(X0), "n_distinct_starts": len(X1), "n_at_best": at_best,
               "n_distinct_at_best": distinct_at_best, "at_best_rtol": AT_BEST_RTOL,
               "grad_inf_scaled": float(polish.grad_inf[0]), "restart_improvement_rel": float(moved),
               "start_status": res.status_counts(),
               "quadratic_zone": {"points": n_quad, "share": n_quad / len(N), "delta": delta,
                                  "median_abs_log_residual": float(np.median(np.abs(resid))),
                                  "warn_below": QUADRATIC_WARN},
               "log_params": dict(zip(PARAMS, map(float, x_best))), "r2_space": "log loss",
               "fit_wall_s": wall, "columns": {"N": n, "D": d, "loss": loss}}
    fit = Fit("chinchilla_approach3", params, objective=float(f_best * delta), r2=float(r2), n=len(N),
              warnings=warnings, details=details)
    if n_boot > 0:
        _bootstrap(fit, distinct, x_best, logN, logD, logL, delta, n_boot, boot_starts, level, seed, max_iter,
                   backend)
    return fit


def _bootstrap(fit: Fit, res, x_best, logN, logD, logL, delta, n_boot, boot_starts, level, seed, max_iter,
               backend) -> None:
    rng = np.random.default_rng(seed)
    W = resample_weights(len(logN), n_boot, rng)
    cands = _distinct_minima(np.vstack([x_best, res.x]), np.concatenate([[np.nanmin(res.f) - 1.0], res.f]), boot_starts)
    K = len(cands)
    t0 = time.perf_counter()
    out = minimize_starts(np.tile(cands, (n_boot, 1)), np.repeat(W, K, axis=0), logN, logD, logL, delta,
                          backend=backend, max_iter=max_iter)
    f = np.where(np.isfinite(out.f), out.f, np.inf).reshape(n_boot, K)
    pick = np.argmin(f, axis=1)
    xs = out.x.reshape(n_boot, K, 5)[np.arange(n_boot), pick]
    gi = out.grad_inf.reshape(n_boot, K)[np.arange(n_boot), pick]
    samples = pd.DataFrame(to_params(xs))
    fit.samples = samples
    fit.ci, fit.se = summarize(samples, level)
    n_bad = int(np.sum(gi > GRAD_WARN))
    if n_bad:
        fit.warnings.append(f"{n_bad} of {n_boot} bootstrap replicates did not converge (gradient > {GRAD_WARN:g})")
    corr = float(np.corrcoef(samples["alpha"], samples["beta"])[0, 1])
    if abs(corr) > 0.95:
        fit.warnings.append(f"alpha and beta are strongly correlated across the bootstrap (r = {corr:.2f})")
    fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level, "method": "resample points",
                                "starts_per_replicate": K, "alpha_beta_corr": corr,
                                "replicates_improved_by_other_starts": int(np.sum(f[:, 0] > f.min(1) * (1 + 1e-6))),
                                "wall_s": time.perf_counter() - t0}

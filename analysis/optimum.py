"""Optimum extraction per group (e.g. the best learning rate per width), with edge flags and intervals.

Estimators, all in u = log_base(x):
- "argmin": the best grid point;
- "quadratic": y = a u^2 + b u + c on the k points nearest the argmin, vertex u* = -b / 2a; accepted
  only when a > 0 and u* lies inside the fitted points (optionally with the intercept c fixed, the
  norm-transfer variant (Filatov et al., arXiv 2510.03871) where u = log2 of the output norm);
- "akima": Akima spline through the points, argmin on a 100-point grid (Porian et al. 2024,
  arXiv 2406.19146).
Seeds are averaged per x first. An optimum at the edge of the grid (or a parabola that opens
downward) is flagged: it is a censored value, a bound rather than an estimate. Interval: bootstrap
over seeds when a group has >= 2 seeds; else, for the quadratic, bootstrap over the fitted points;
for argmin/akima, the grid resolution (halfway to the neighbouring grid points). An edge optimum gets
a one-sided interval: [x_opt, inf) at the high edge, (0, x_opt] at the low edge.
"""

from __future__ import annotations

import math
import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.grid import snap_relative
from analysis.validate import as_list, group_label, iter_groups, numeric, public, require_columns, require_frame

METHODS = ("argmin", "quadratic", "akima")


def argmin_optimum(u: np.ndarray, y: np.ndarray) -> dict:
    i = int(np.argmin(y))
    edge = "low" if i == 0 else "high" if i == len(u) - 1 else None
    return {"u_opt": float(u[i]), "y_opt": float(y[i]), "edge_side": edge, "concave": False}


def quadratic_optimum(u: np.ndarray, y: np.ndarray, k: int = 5, intercept: float | None = None,
                      w: np.ndarray | None = None) -> dict:
    """Vertex of a (weighted) parabola through the k points nearest the argmin (u sorted ascending)."""
    n = len(u)
    i = int(np.argmin(y))
    k = min(k, n)
    lo = min(max(i - k // 2, 0), n - k)
    sl = slice(lo, lo + k)
    uu, yy = u[sl], y[sl]
    ww = np.ones_like(uu) if w is None else w[sl]
    if intercept is None:
        A = np.column_stack([uu**2, uu, np.ones_like(uu)])
        target = yy
    else:
        A = np.column_stack([uu**2, uu])
        target = yy - intercept
    sw = np.sqrt(ww)
    coef, *_ = np.linalg.lstsq(A * sw[:, None], target * sw, rcond=None)
    a, b = coef[0], coef[1]
    c = coef[2] if intercept is None else intercept
    out = argmin_optimum(u, y)
    out.update(coef_a=float(a), coef_b=float(b), coef_c=float(c), window=(float(uu[0]), float(uu[-1])))
    if not (a > 0):
        out["concave"] = True  # no minimum: keep the argmin, flagged
        return out
    u_star = -b / (2 * a)
    if u_star < uu[0] or u_star > uu[-1]:
        out["edge_side"] = "low" if u_star < uu[0] else "high"
        return out  # vertex outside the fitted points: a bound, keep the argmin
    # an interior vertex next to a best grid point at the border stays flagged (edge_side from the argmin):
    # the loss was still falling at the last value tried, so the minimum may lie beyond it
    out.update(u_opt=float(u_star), y_opt=float(c - b * b / (4 * a)))
    return out


def akima_optimum(u: np.ndarray, y: np.ndarray, n_eval: int = 100) -> dict:
    if len(u) < 3:
        return argmin_optimum(u, y)
    grid = np.linspace(u[0], u[-1], n_eval)
    vals = Akima1DInterpolator(u, y)(grid)
    j = int(np.nanargmin(vals))
    edge = "low" if j == 0 else "high" if j == n_eval - 1 else None
    return {"u_opt": float(grid[j]), "y_opt": float(vals[j]), "edge_side": edge, "concave": False}


def _estimate(method: str, u, y, k, intercept, w) -> dict:
    if method == "argmin" or len(u) < 3:
        return argmin_optimum(u, y)
    if method == "quadratic":
        return quadratic_optimum(u, y, k, intercept, w)
    return akima_optimum(u, y)


def _resolution(u: np.ndarray, u_opt: float) -> tuple[float, float]:
    """Halfway to the neighbouring grid points around u_opt (or the half step beyond an edge)."""
    if len(u) < 2:
        return (u_opt, u_opt)
    step = np.median(np.diff(u))
    left = u[u < u_opt - 1e-12]
    right = u[u > u_opt + 1e-12]
    lo = (u_opt + left[-1]) / 2 if left.size else u_opt - step / 2
    hi = (u_opt + right[0]) / 2 if right.size else u_opt + step / 2
    return (float(lo), float(hi))


@public
def find_optima(df: pd.DataFrame, x: str, y: str, by: str | Sequence[str] = (), *, method: str = "quadratic",
                k: int = 5, seed_col: str | None = None, base: float = 2.0, log_x: bool = True,
                intercept: float | None = None, weights: str | None = None, diverged_col: str | None = None,
                n_boot: int = 200, level: float = 0.95, seed: int = 0, snap_rtol: float = 1e-3,
                empty: str = "raise", return_samples: bool = False):
    """One optimum of y over x per group of `by` columns.

    Rows with non-finite y (or diverged_col true) are excluded and counted (n_diverged). With
    log_x, u = log_base(x) and x must be > 0. Returns a DataFrame with the group keys and: x_opt,
    u_opt (= log_base x_opt), y_opt, x_lo/x_hi (interval), n_points, n_seeds, n_diverged, at_edge,
    edge_side, concave, ok (interior and convex), method, interval (how it was obtained), and for the
    quadratic coef_a, coef_b, coef_c (y = a u^2 + b u + c). A group without finite points raises
    (empty="raise") or gets a row of NaN with ok=False and interval "no finite points" (empty="keep").
    With return_samples, also an (n_boot, n_groups) array of bootstrap x_opt replicates (NaN where the
    group has no bootstrap). Rows with a non-finite x or a NaN group key (e.g. config columns of runs
    missing from the runs table) are dropped with an AnalysisWarning; if none remain it raises.
    """
    by = as_list(by)
    what = f"find_optima({y} over {x})"
    require_frame(df, what)
    require_columns(df, [x, y, *by, seed_col, weights, diverged_col], what)
    if method not in METHODS:
        raise AnalysisError(f"{what}: method={method!r} must be one of {', '.join(METHODS)}")
    work = df.copy()
    xv = numeric(work, x, what)
    if not np.isfinite(xv).all():
        bad_x = ~np.isfinite(xv)
        pywarnings.warn(f"{what}: {int(bad_x.sum())} row(s) with a non-finite {x!r} dropped (runs missing from the "
                        "runs table?)", AnalysisWarning, stacklevel=2)
        work, xv = work[~bad_x], xv[~bad_x]
        if work.empty:
            raise AnalysisError(f"{what}: column {x!r} has no finite values")
    work["_x"] = snap_relative(xv, snap_rtol)
    work["_y"] = numeric(work, y, what)
    bad = ~np.isfinite(work["_y"].to_numpy())
    if diverged_col is not None:
        bad |= work[diverged_col].fillna(False).astype(bool).to_numpy()
    work["_bad"] = bad
    if log_x:
        nonpos = work["_x"].to_numpy() <= 0
        if nonpos.any():
            raise AnalysisError(f"{what}: column {x!r} has {int(nonpos.sum())} non-positive value(s); "
                                "the optimum is taken in log x (pass log_x=False for a linear axis)")
    rng = np.random.default_rng(seed)
    rows, samples = [], []
    for key, label, g in iter_groups(work, by, what):
        row = dict(zip(by, key))
        try:
            res, samp = _one_group(g, method, k, seed_col, base, log_x, intercept, weights, n_boot, level, rng,
                                   label, what)
        except _EmptyGroup as e:
            if empty == "raise":
                raise AnalysisError(str(e)) from None
            res, samp = _empty_row(int(g["_bad"].sum())), np.full(n_boot, np.nan)
        row.update(res)
        rows.append(row)
        samples.append(samp)
    if not rows:
        raise AnalysisError(f"{what}: no group left (every row has a NaN in {', '.join(map(repr, by))})")
    table = pd.DataFrame(rows)
    if return_samples:
        return table, np.column_stack(samples) if samples else np.empty((n_boot, 0))
    return table


def _one_group(g, method, k, seed_col, base, log_x, intercept, weights, n_boot, level, rng, label, what):
    n_div = int(g["_bad"].sum())
    good = g[~g["_bad"]]
    if good.empty:
        raise _EmptyGroup(f"{what}: group {label} has no finite {'' if n_div == 0 else 'non-diverged '}points "
                          f"({n_div} diverged)")
    to_u = (lambda v: np.log(v) / math.log(base)) if log_x else (lambda v: np.asarray(v, float))
    from_u = (lambda v: base ** np.asarray(v)) if log_x else (lambda v: np.asarray(v))
    seeds = good[seed_col].to_numpy() if seed_col else np.zeros(len(good))
    # mean over seeds (and over repeated rows) at each x; table of per-seed means for the bootstrap
    per_seed = good.assign(_s=seeds).groupby(["_x", "_s"])["_y"].mean().unstack("_s")
    xs = per_seed.index.to_numpy(float)
    u = to_u(xs)
    ybar = per_seed.mean(axis=1).to_numpy()
    w = good.groupby("_x")[weights].mean().to_numpy(float) if weights else None
    est = _estimate(method, u, ybar, k, intercept, w)
    n_seeds = per_seed.shape[1]
    u_samples = np.full(n_boot, np.nan)
    if n_boot > 0 and n_seeds >= 2:
        cols = per_seed.to_numpy()
        for r in range(n_boot):
            pick = cols[:, rng.integers(0, n_seeds, n_seeds)]
            yb = np.nanmean(pick, axis=1) if np.isnan(pick).any() else pick.mean(axis=1)
            okb = np.isfinite(yb)
            if okb.sum() >= 1:
                u_samples[r] = _estimate(method, u[okb], yb[okb], k, intercept, None if w is None else w[okb])["u_opt"]
        interval = "bootstrap over seeds"
    elif n_boot > 0 and method == "quadratic" and len(u) >= 3:
        lo_w, hi_w = est.get("window", (u[0], u[-1]))
        inw = (u >= lo_w) & (u <= hi_w)
        uw, yw = u[inw], ybar[inw]
        for r in range(n_boot):
            idx = np.sort(rng.integers(0, len(uw), len(uw)))
            if len(np.unique(uw[idx])) >= 3:
                e = quadratic_optimum(uw[idx], yw[idx], len(idx), intercept, None if w is None else w[inw][idx])
                u_samples[r] = e["u_opt"]
        interval = "bootstrap over fitted points"
    else:
        interval = "grid resolution"
    finite = u_samples[np.isfinite(u_samples)]
    if finite.size >= 10:
        lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    else:
        lo, hi = _resolution(u, est["u_opt"])
        interval = "grid resolution"
    at_edge = est["edge_side"] is not None
    if at_edge:  # censored: the optimum lies at or beyond the last value tried, so report a one-sided bound
        lo, hi = (-np.inf, est["u_opt"]) if est["edge_side"] == "low" else (est["u_opt"], np.inf)
        interval = "censored at the grid edge (a bound)"
    to_x = (lambda v: float(from_u(v)) if np.isfinite(v) else (0.0 if v < 0 and log_x else float(v)))
    out = {"x_opt": float(from_u(est["u_opt"])), "u_opt": est["u_opt"], "y_opt": est["y_opt"],
           "x_lo": to_x(lo), "x_hi": to_x(hi), "n_points": len(u), "n_seeds": n_seeds,
           "n_diverged": n_div, "at_edge": at_edge, "edge_side": est["edge_side"], "concave": est["concave"],
           "ok": not at_edge and not est["concave"], "method": method if len(u) >= 3 else "argmin",
           "interval": interval}
    for c in ("coef_a", "coef_b", "coef_c"):
        out[c] = est.get(c, np.nan)
    return out, np.where(np.isfinite(u_samples), from_u(u_samples), np.nan)


class _EmptyGroup(Exception):
    pass


def _empty_row(n_diverged: int) -> dict:
    return {"x_opt": np.nan, "u_opt": np.nan, "y_opt": np.nan, "x_lo": np.nan, "x_hi": np.nan, "n_points": 0,
            "n_seeds": 0, "n_diverged": n_diverged, "at_edge": False, "edge_side": None, "concave": False,
            "ok": False, "method": None, "interval": "no finite points", "coef_a": np.nan, "coef_b": np.nan,
            "coef_c": np.nan}


@public
def optimum_warnings(optima: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """Plain-language warnings for optima at the grid edge or from downward-opening parabolas."""
    out = []
    for _, r in optima.iterrows():
        label = group_label(list(by), tuple(r[b] for b in by)) if by else "all rows"
        if r["at_edge"]:
            out.append(f"optimum at the {r['edge_side']} edge of the grid for {label}: a bound, not an estimate "
                       "(extend the grid)")
        if r["concave"]:
            out.append(f"parabola opens downward for {label}: no interior minimum, argmin kept")
        if r["interval"] == "no finite points":
            out.append(f"no finite points for {label} ({r['n_diverged']} diverged): no optimum")
    return out

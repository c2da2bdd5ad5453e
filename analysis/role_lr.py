"""Per-layer learning-rate sensitivity: runs that scan the free per-role lr multipliers <prefix><role>.

Filatov et al., "Optimal Scaling Needs Optimal Norm" (arXiv 2510.03871): the output layer is the most
sensitive to its learning rate, and the hidden layers prefer a lower rate than the output layer. Design,
on one row per run (one model size and horizon; the loss is e.g. the final validation loss):

1. roles: the columns <prefix><role> (default prefix "param.lr_mult.") whose values vary among the runs;
   a cell is one combination of multipliers (its seeds are averaged);
2. slice of a role: the cells with every other role at the reference multiplier (1), the loss against
   log2 of the role's multiplier;
3. optimum: vertex of the parabola of the loss in log2 multiplier on the k points nearest the argmin,
   flagged (a bound, not an estimate) when the argmin or the vertex lies at the edge of the slice;
4. sensitivity: the parabola's curvature a, i.e. the loss increase one octave away from the optimum (a
   local, range-free measure); also the spread (max - min) of the slice's losses, which also counts an
   asymmetric rise far out but depends on the range scanned, and the gain y(reference) - y(optimum). The
   most sensitive role has the largest of the two chosen by rank_by (default the curvature);
   `share_largest` is the fraction of bootstrap replicates agreeing;
5. differences of optima: log2 m*_a - log2 m*_b for every pair of roles (hidden below output: < 0);
6. pairs scanned jointly (>= 4 cells with both roles off the reference, the others at it): a quadratic
   surface in the two log2 multipliers on the cells within `window` octaves (each axis) of the argmin; its
   vertex when the surface is convex there and the vertex lies inside the fitted box, else the argmin,
   flagged; the argmin at the border of the scanned grid is flagged too (the loss may fall further out).

Intervals (percentile, default 95%): a bootstrap that refits everything on each replicate. With >= 2
seeds in every cell, the seeds of each cell are resampled; with one seed, a residual bootstrap: each
replicate adds to every cell's loss a draw from the residuals of all the fits of step 3 and 6, pooled
(one loss noise) and inflated by sqrt(n / (n - p)) for each fit's p parameters.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.errors import AnalysisError
from analysis.grid import snap_relative
from analysis.norm_guided import parabola_vertex
from analysis.validate import numeric, public, require_columns, require_frame

_TOL = 1e-6  # log2 multipliers closer than this are the same grid value
RANK_BY = ("curvature", "spread")


@public
def varying_roles(runs: pd.DataFrame, prefix: str = "param.lr_mult.") -> list[str]:
    """The roles <r> whose column <prefix><r> takes more than one value among the runs, sorted."""
    require_frame(runs, "varying_roles")
    cols = [c for c in runs.columns if str(c).startswith(prefix)]
    if not cols:
        raise AnalysisError(f"varying_roles: no column starts with prefix={prefix!r}")
    roles = sorted(c[len(prefix):] for c in cols if pd.to_numeric(runs[c], errors="coerce").nunique() > 1)
    if not roles:
        raise AnalysisError(f"varying_roles: none of the columns {', '.join(map(repr, cols))} varies among the runs")
    return roles


@dataclass
class _Cells:
    roles: list[str]
    u: np.ndarray  # (n_cells, n_roles) log2 multipliers
    cell: np.ndarray  # (n_runs,) cell of each run
    y: np.ndarray  # (n_runs,) loss; NaN for diverged runs
    slices: dict  # role -> indices of its slice's cells, by ascending multiplier
    pairs: dict  # (role_a, role_b) -> indices of the pair's grid cells


def _cells(runs: pd.DataFrame, y: str, prefix: str, roles: list[str], reference: float, what: str) -> _Cells:
    u_runs = np.column_stack([np.log2(_positive_multipliers(runs, prefix + r, what)) for r in roles])
    yv = numeric(runs, y, what)
    if "diverged" in runs:
        yv = np.where(runs["diverged"].fillna(False).astype(bool).to_numpy(), np.nan, yv)
    keys, cell = np.unique(np.round(u_runs / _TOL) * _TOL, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    at_ref = np.abs(keys - np.log2(reference)) < 1e3 * _TOL
    slices, pairs = {}, {}
    for j, r in enumerate(roles):
        others = np.delete(at_ref, j, axis=1).all(axis=1)
        idx = np.flatnonzero(others)
        slices[r] = idx[np.argsort(keys[idx, j])]
    for (i, a), (j, b) in itertools.combinations(enumerate(roles), 2):
        rest = np.delete(at_ref, [i, j], axis=1).all(axis=1)
        off_axis = rest & ~at_ref[:, i] & ~at_ref[:, j]
        if off_axis.sum() >= 4:
            pairs[(a, b)] = np.flatnonzero(rest)
    return _Cells(roles, keys, cell, yv, slices, pairs)


def _positive_multipliers(runs: pd.DataFrame, col: str, what: str) -> np.ndarray:
    v = numeric(runs, col, what)
    if not (np.isfinite(v) & (v > 0)).all():
        raise AnalysisError(f"{what}: column {col!r} has non-positive or missing multipliers (log2 is used)")
    return snap_relative(v, 1e-3)


def _cell_means(cells: _Cells, w: np.ndarray) -> np.ndarray:
    n = cells.u.shape[0]
    finite = np.isfinite(cells.y)
    num = np.bincount(cells.cell, w * np.where(finite, cells.y, 0.0), minlength=n)
    den = np.bincount(cells.cell, w * finite, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@public
def quadratic_surface_vertex(u1, u2, y, window: float = 2.0) -> dict:
    """Vertex of y = c + b1 u1 + b2 u2 + a11 u1^2 + a22 u2^2 + a12 u1 u2 fitted on the points within
    `window` of the argmin along each axis: u1_opt, u2_opt, y_opt, convex, inside (the vertex lies in the
    fitted box), ok, n_fit and the residuals. Not convex or outside: the argmin, ok False."""
    u1, u2, y = (np.asarray(v, float) for v in (u1, u2, y))
    keep = np.isfinite(y)
    u1, u2, y = u1[keep], u2[keep], y[keep]
    if y.size == 0:
        return {"u1_opt": np.nan, "u2_opt": np.nan, "y_opt": np.nan, "convex": False, "inside": False, "ok": False,
                "n_fit": 0, "residuals": np.empty(0)}
    i = int(np.argmin(y))
    win = (np.abs(u1 - u1[i]) <= window + _TOL) & (np.abs(u2 - u2[i]) <= window + _TOL)
    out = {"u1_opt": float(u1[i]), "u2_opt": float(u2[i]), "y_opt": float(y[i]), "convex": False, "inside": False,
           "ok": False, "n_fit": int(win.sum()), "residuals": np.empty(0)}
    if win.sum() < 7 or np.unique(u1[win]).size < 3 or np.unique(u2[win]).size < 3:
        return out  # six coefficients: at least one residual degree of freedom and three values per axis
    a1, a2, yw = u1[win], u2[win], y[win]
    X = np.column_stack([np.ones_like(a1), a1, a2, a1**2, a2**2, a1 * a2])
    coef, *_ = np.linalg.lstsq(X, yw, rcond=None)
    out["residuals"] = yw - X @ coef
    hess = np.array([[2 * coef[3], coef[5]], [coef[5], 2 * coef[4]]])
    out["convex"] = bool(hess[0, 0] > 0 and np.linalg.det(hess) > 0)
    if not out["convex"]:
        return out
    v = np.linalg.solve(hess, -coef[1:3])
    out["inside"] = bool(a1.min() <= v[0] <= a1.max() and a2.min() <= v[1] <= a2.max())
    if out["inside"]:
        out.update(u1_opt=float(v[0]), u2_opt=float(v[1]), ok=True,
                   y_opt=float(np.array([1, v[0], v[1], v[0] ** 2, v[1] ** 2, v[0] * v[1]]) @ coef))
    return out


def _slice_edge(fit: dict) -> str:
    """'low'/'high' when the slice's argmin or vertex sits at its end, 'concave' for no minimum, else ''."""
    return "concave" if fit["concave"] else (fit["edge_side"] or "")


def _grid_edge(u1: np.ndarray, u2: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> str:
    """Which border of the scanned grid the argmin lies on ('' when inside)."""
    keep = np.isfinite(y)
    i = int(np.argmin(np.where(keep, y, np.inf)))
    sides = []
    for u, name in ((u1, names[0]), (u2, names[1])):
        if np.isclose(u[i], u[keep].min()):
            sides.append(f"{name} low")
        elif np.isclose(u[i], u[keep].max()):
            sides.append(f"{name} high")
    return ", ".join(sides)


def _estimate(cells: _Cells, ybar: np.ndarray, k: int, window: float) -> dict:
    out = {"slices": {}, "pairs": {}}
    for j, r in enumerate(cells.roles):
        idx = cells.slices[r]
        fit = parabola_vertex(cells.u[idx, j], ybar[idx], k)
        fit["edge"] = _slice_edge(fit)
        fit["spread"] = float(np.nanmax(ybar[idx]) - np.nanmin(ybar[idx])) if np.isfinite(ybar[idx]).any() else np.nan
        out["slices"][r] = fit
    for (a, b), idx in cells.pairs.items():
        ia, ib = cells.roles.index(a), cells.roles.index(b)
        fit = quadratic_surface_vertex(cells.u[idx, ia], cells.u[idx, ib], ybar[idx], window)
        fit["edge"] = _grid_edge(cells.u[idx, ia], cells.u[idx, ib], ybar[idx], (a, b))
        out["pairs"][(a, b)] = fit
    return out


def _residual_pool(point: dict) -> np.ndarray:
    parts = []
    for fit, p in [(f, 3) for f in point["slices"].values()] + [(f, 6) for f in point["pairs"].values()]:
        r = fit["residuals"]
        if r.size > p:
            parts.append(r * np.sqrt(r.size / (r.size - p)))
    return np.concatenate(parts) if parts else np.empty(0)


def _replicates(cells: _Cells, base: np.ndarray, point: dict, k: int, window: float, n_boot: int,
                rng: np.random.Generator) -> tuple[list[dict], str]:
    per_cell = np.bincount(cells.cell, minlength=cells.u.shape[0])
    used = np.unique(np.concatenate([*cells.slices.values(), *cells.pairs.values()]))
    if (per_cell[used] >= 2).all():
        members = [np.flatnonzero(cells.cell == c) for c in range(cells.u.shape[0])]
        reps = []
        for _ in range(n_boot):
            w = np.zeros(cells.cell.size)
            for m in members:  # resample the seeds of every cell
                np.add.at(w, rng.choice(m, m.size), 1.0)
            reps.append(_estimate(cells, _cell_means(cells, w), k, window))
        return reps, f"bootstrap over the seeds of each cell ({int(per_cell[used].min())}+ per cell)"
    pool = _residual_pool(point)
    if pool.size == 0:
        return [], "no bootstrap (the fits left no residuals)"
    reps = [_estimate(cells, base + rng.choice(pool, base.shape), k, window) for _ in range(n_boot)]
    return reps, f"residual bootstrap ({pool.size} pooled residuals)"


def _ci(samples, level: float) -> list[float]:
    return list(percentile_interval(np.asarray(samples, float), level))


@public
def role_sensitivity(runs: pd.DataFrame, y: str = "final_val_loss", *, prefix: str = "param.lr_mult.",
                     reference: float = 1.0, k: int = 5, window: float = 2.0, rank_by: str = "curvature",
                     n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Steps 1-6 of the module docstring; rank_by ("curvature" or "spread") picks the sensitivity that
    names the most sensitive role. Returns roles (one row per role: optimum, curvature,
    spread, gain, flags, intervals), differences (pairs of roles' optima), grids (joint optima of roles
    scanned together), slices (the cells of every slice: role, multiplier, loss, seeds), cells (all
    cells with their multipliers), most_sensitive, bootstrap (its scheme) and warnings."""
    what = "role_sensitivity"
    require_frame(runs, what)
    require_columns(runs, [y], what)
    if k < 3:
        raise AnalysisError(f"{what}: k={k!r} must be >= 3 (a parabola has three coefficients)")
    if rank_by not in RANK_BY:
        raise AnalysisError(f"{what}: rank_by={rank_by!r} must be one of {', '.join(RANK_BY)}")
    if not reference > 0:
        raise AnalysisError(f"{what}: reference={reference!r} must be a positive multiplier")
    roles = varying_roles(runs, prefix)
    cells = _cells(runs, y, prefix, roles, reference, what)
    warnings = []
    for r in roles:
        if cells.slices[r].size < 3:
            warnings.append(f"role {r!r}: {cells.slices[r].size} multiplier(s) with the other roles at {reference:g}, "
                            "need 3 for a parabola")
    ybar = _cell_means(cells, np.ones(cells.cell.size))
    point = _estimate(cells, ybar, k, window)
    reps, scheme = _replicates(cells, ybar, point, k, window, n_boot, np.random.default_rng(seed)) \
        if n_boot > 0 else ([], "no bootstrap (n_boot=0)")
    table = _role_rows(cells, ybar, point, reps, reference, prefix, rank_by, level)
    most = table.loc[table[rank_by].idxmax(), "role"] if table[rank_by].notna().any() else None
    table["most_sensitive"] = table["role"] == most
    for _, r in table.iterrows():
        if r["edge"]:
            warnings.append(f"role {r['role']!r}: optimum at the {r['edge']} edge of its slice: a bound, not an "
                            "estimate (extend the multipliers)")
    grids = _grid_rows(cells, ybar, point, reps, level)
    for g in grids:
        if not g["ok"]:
            warnings.append(f"joint optimum of {g['roles'][0]!r} x {g['roles'][1]!r}: "
                            + (f"argmin at the {g['edge']} border of the grid" if g["edge"] else
                               "no convex surface with its vertex inside the fitted cells") + ": the argmin is kept")
    return {"roles": table, "differences": _difference_rows(cells, point, reps, level), "grids": grids,
            "slices": _slice_rows(cells, ybar), "cells": _cell_table(cells, ybar, prefix),
            "most_sensitive": most, "rank_by": rank_by, "warnings": warnings,
            "bootstrap": {"scheme": scheme, "n_boot": len(reps), "level": level, "seed": seed}}


def _role_rows(cells: _Cells, ybar: np.ndarray, point: dict, reps: list[dict], reference: float, prefix: str,
               rank_by: str, level: float) -> pd.DataFrame:
    stat = "a" if rank_by == "curvature" else "spread"
    rep_stat = np.array([[rep["slices"][r][stat] for r in cells.roles] for rep in reps], float)
    rep_stat = rep_stat.reshape(len(reps), len(cells.roles))
    largest = np.argmax(np.where(np.isfinite(rep_stat), rep_stat, -np.inf), axis=1)
    rows = []
    for j, r in enumerate(cells.roles):
        fit, idx = point["slices"][r], cells.slices[r]
        ref = [c for c in idx if abs(cells.u[c, j] - np.log2(reference)) < 1e3 * _TOL]
        y_ref = float(ybar[ref[0]]) if ref else np.nan
        rows.append({"role": r, "column": prefix + r, "n_points": int(np.isfinite(ybar[idx]).sum()),
                     "log2_mult_opt": fit["u_opt"],
                     "log2_mult_ci": _ci([rep["slices"][r]["u_opt"] for rep in reps], level),
                     "mult_opt": 2.0 ** fit["u_opt"], "edge": fit["edge"], "curvature": fit["a"],
                     "curvature_ci": _ci([rep["slices"][r]["a"] for rep in reps], level), "spread": fit["spread"],
                     "spread_ci": _ci([rep["slices"][r]["spread"] for rep in reps], level),
                     "y_opt": fit["y_opt"], "y_reference": y_ref, "gain": y_ref - fit["y_opt"],
                     "share_largest": float(np.mean(largest == j)) if reps else np.nan,
                     "coef": list(fit["coef"]), "window": list(fit["window"])})
    return pd.DataFrame(rows)


def _difference_rows(cells: _Cells, point: dict, reps: list[dict], level: float) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations(cells.roles, 2):
        fa, fb = point["slices"][a], point["slices"][b]
        rows.append({"role_a": a, "role_b": b, "delta_log2_mult": fa["u_opt"] - fb["u_opt"],
                     "ci": _ci([rep["slices"][a]["u_opt"] - rep["slices"][b]["u_opt"] for rep in reps], level),
                     "bound": bool(fa["edge"] or fb["edge"])})
    return pd.DataFrame(rows, columns=["role_a", "role_b", "delta_log2_mult", "ci", "bound"])


def _grid_rows(cells: _Cells, ybar: np.ndarray, point: dict, reps: list[dict], level: float) -> list[dict]:
    out = []
    for (a, b), idx in cells.pairs.items():
        ia, ib = cells.roles.index(a), cells.roles.index(b)
        fit = point["pairs"][(a, b)]
        out.append({"roles": [a, b], "n_cells": int(idx.size), "n_fit": fit["n_fit"],
                    "log2_mult_opt": [fit["u1_opt"], fit["u2_opt"]],
                    "log2_mult_ci": [_ci([rep["pairs"][(a, b)]["u1_opt"] for rep in reps], level),
                                     _ci([rep["pairs"][(a, b)]["u2_opt"] for rep in reps], level)],
                    "y_opt": fit["y_opt"], "convex": fit["convex"], "inside": fit["inside"],
                    "ok": bool(fit["ok"] and not fit["edge"]), "edge": fit["edge"],
                    "cells": pd.DataFrame({a: 2.0 ** cells.u[idx, ia], b: 2.0 ** cells.u[idx, ib], "y": ybar[idx]})})
    return out


def _slice_rows(cells: _Cells, ybar: np.ndarray) -> pd.DataFrame:
    per_cell = np.bincount(cells.cell, minlength=cells.u.shape[0])
    rows = [{"role": r, "log2_mult": float(cells.u[c, j]), "mult": float(2.0 ** cells.u[c, j]), "y": float(ybar[c]),
             "n_seeds": int(per_cell[c])} for j, r in enumerate(cells.roles) for c in cells.slices[r]]
    return pd.DataFrame(rows, columns=["role", "log2_mult", "mult", "y", "n_seeds"])


def _cell_table(cells: _Cells, ybar: np.ndarray, prefix: str) -> pd.DataFrame:
    table = pd.DataFrame(2.0 ** cells.u, columns=[prefix + r for r in cells.roles])
    table["y"] = ybar
    table["n_seeds"] = np.bincount(cells.cell, minlength=cells.u.shape[0])
    return table

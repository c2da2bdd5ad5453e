"""Norm-guided prediction of the optimal learning rate at a longer horizon: eta*(D1) from runs up to D0.

Filatov et al., "Optimal Scaling Needs Optimal Norm" (arXiv 2510.03871): with Scion the optimal (lr, B)
pairs at a token horizon D all reach one output-layer norm ||W_out||_{RMS->inf}, the same at every D. If
so, short runs suffice to tune a long one: the optimal lr at D1 = factor x D0 is the lr whose norm
trajectory reaches that norm at D1. Design, per batch size B of constant-lr runs over an lr grid:

1. horizons: the evaluated horizons D in [D0 / 2^octaves, D0] at which at least max(k, 3) learning rates
   have a finite loss (the early horizons, whose optimum sits at the top of the lr grid, stay out);
2. optimal norm at each such D: vertex of the parabola of loss in log2(norm) on the k points nearest the
   argmin (an edge or concave vertex is censored and left out). Predicted at D1 in two variants:
   "norm_constant", their mean (the paper's claim), and "norm_drift", their straight line in log2 D
   evaluated at D1;
3. trajectories: per lr, a straight line of log2 norm against log2 tokens fitted on every row logging the
   norm (training lines too) in [D0 / 2^trajectory_octaves, D0], evaluated at D1 (the late slope is the
   one that carries on; a trajectory that keeps bending shows up as `trajectory_bias`);
4. eta_pred(B, D1): the lr at which the extrapolated log2 norm(D1) first rises through the predicted
   optimal norm (the norm grows with lr), linear in log2 lr between the two grid neighbours; a target
   outside the extrapolated norms gives the end of the grid, flagged as a bound;
5. baseline "power_law": log2 eta*(D) = beta log2 D + gamma by OLS on the interior optima at the
   horizons of step 1 (eta* = vertex of the parabola of loss in log2 lr on the k points nearest the
   argmin), evaluated at D1;
6. measured: eta*(D1) by the same parabola on the full data, censored (flagged, left out of the summary)
   when it lies at the edge of the lr grid;
7. error of each method: log2(eta_pred / eta_meas); summary: the mean absolute error (and the mean
   signed error) over the batch sizes whose measured and predicted values are both uncensored.

Intervals (percentile, default 95%) come from a bootstrap that reruns steps 1-7 on each replicate, so
the uncertainty of the measured optimum enters the error too. With >= 2 seeds in every (B, lr) cell the
runs of each cell are resampled (a seed bootstrap); with one seed, a residual bootstrap: each replicate
adds to every loss at horizon D a draw from the residuals of the loss-vs-log2-lr parabolas at D, pooled
over batch sizes (a 5-point parabola leaves 2 degrees of freedom), and to every log2 norm one from the
pooled residuals of the trajectory lines (each residual inflated by sqrt(n / (n - p)) for the p
parameters of its fit). The residuals include the misfit of a parabola, so the noise is if anything
overstated where the loss is far from parabolic (the short horizons of the large batches). Either way
the interval measures noise: a wrong assumption (a norm that drifts, a trajectory that bends) shows up
in the point error, not in the interval.
"""

from __future__ import annotations

import warnings as pywarnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.grid import snap_relative
from analysis.optimum import find_optima, quadratic_optimum
from analysis.validate import numeric, public, require_columns, require_frame

METHODS = ("norm_constant", "norm_drift", "power_law")
_RTOL = 1e-6  # horizons are compared with this relative tolerance (logged token counts are exact integers)
_NAN_VERTEX = {"u_opt": np.nan, "y_opt": np.nan, "a": np.nan, "coef": (np.nan,) * 3, "window": (np.nan, np.nan),
               "edge_side": None, "concave": False, "ok": False, "residuals": np.empty(0)}


@public
def parabola_vertex(u, y, k: int = 5) -> dict:
    """Vertex of the parabola of y in u on the k points nearest the argmin (analysis.optimum's
    quadratic_optimum, after dropping non-finite points and sorting by u): u_opt, y_opt, a (the
    curvature: the rise of y one unit of u away from the vertex), coef (a, b, c of y = a u^2 + b u + c),
    window (the fitted u range), edge_side, concave, ok (interior and convex) and the residuals of the
    fitted points. Fewer than 3 finite points give NaN, ok False."""
    u, y = np.asarray(u, float), np.asarray(y, float)
    keep = np.isfinite(u) & np.isfinite(y)
    if keep.sum() < 3:
        return dict(_NAN_VERTEX)
    order = np.argsort(u[keep], kind="stable")
    uu, yy = u[keep][order], y[keep][order]
    est = quadratic_optimum(uu, yy, k)
    lo, hi = est["window"]
    win = (uu >= lo) & (uu <= hi)
    fitted = est["coef_a"] * uu[win] ** 2 + est["coef_b"] * uu[win] + est["coef_c"]
    return {"u_opt": est["u_opt"], "y_opt": est["y_opt"], "a": est["coef_a"],
            "coef": (est["coef_a"], est["coef_b"], est["coef_c"]), "window": (lo, hi), "edge_side": est["edge_side"],
            "concave": est["concave"], "ok": est["edge_side"] is None and not est["concave"],
            "residuals": yy[win] - fitted}


@public
def first_crossing(u, values, target: float) -> tuple[float, str | None]:
    """(u, edge side) where `values` (ordered by ascending u) first rise through `target`, linear in u
    between the two neighbours. A target below every value gives (u[0], "low"), above every value
    (u[-1], "high"): bounds, not estimates. Non-finite points are skipped; NaN when none remain."""
    u, v = np.asarray(u, float), np.asarray(values, float)
    keep = np.isfinite(u) & np.isfinite(v)
    u, v = u[keep], v[keep]
    if u.size == 0 or not np.isfinite(target):
        return np.nan, None
    reached = np.flatnonzero(v >= target)
    if reached.size == 0:
        return float(u[-1]), "high"
    i = int(reached[0])
    if i == 0:
        return float(u[0]), "low"
    frac = (target - v[i - 1]) / (v[i] - v[i - 1])
    return float(u[i - 1] + frac * (u[i] - u[i - 1])), None


@public
def norm_curve_table(runs: pd.DataFrame, curves: pd.DataFrame, *, loss: str = "val_loss",
                     norm: str = "norm/param/output", horizon: str = "tokens", lr: str = "optim.lr",
                     batch: str = "run.batch_size", seed_col: str | None = None) -> pd.DataFrame:
    """One row per (run, horizon > 0) logging a positive norm: run_id, B, lr, seed, D, loss (NaN where
    not evaluated or not finite) and log2_norm. A training line and an eval line of the same horizon are
    merged. Curves of runs absent from `runs` are dropped (they have no lr or batch size)."""
    what = "norm_curve_table"
    require_frame(curves, f"{what} (curves)")
    require_frame(runs, f"{what} (runs)")
    require_columns(curves, ["run_id", loss, norm, horizon], f"{what} (curves)")
    require_columns(runs, ["run_id", lr, batch, seed_col], f"{what} (runs)")
    rows = curves[["run_id", horizon, loss, norm]].astype({"run_id": str})
    rows = rows.groupby(["run_id", horizon], sort=False, as_index=False).first()  # first non-null per column
    h, n = numeric(rows, horizon, what), numeric(rows, norm, what)
    rows = rows[(h > 0) & np.isfinite(n) & (n > 0)]
    if rows.empty:
        raise AnalysisError(f"{what}: no curve row has a positive {horizon!r} and a positive {norm!r} "
                            "(is the norm logged?)")
    cfg = runs[["run_id", lr, batch] + ([seed_col] if seed_col else [])].astype({"run_id": str})
    table = rows.merge(cfg.drop_duplicates("run_id"), on="run_id", how="inner")
    if table.empty:
        raise AnalysisError(f"{what}: no curve row belongs to a run of the runs table")
    lrs = numeric(table, lr, what)
    if not (np.isfinite(lrs) & (lrs > 0)).all():
        raise AnalysisError(f"{what}: column {lr!r} has non-positive or missing values (log2 lr is used)")
    loss_v = numeric(table, loss, what)
    return pd.DataFrame({"run_id": table["run_id"].to_numpy(), "B": numeric(table, batch, what),
                         "lr": snap_relative(lrs, 1e-3), "seed": table[seed_col].to_numpy() if seed_col else 0,
                         "D": numeric(table, horizon, what), "loss": np.where(np.isfinite(loss_v), loss_v, np.nan),
                         "log2_norm": np.log2(numeric(table, norm, what))})


@public
def resolve_horizons(table: pd.DataFrame, d0: float | None = None, factor: float = 4.0,
                     horizon: str = "D") -> tuple[float, float, list[str]]:
    """(D0, D1, warnings). D0 defaults to the largest evaluated horizon <= the largest one / factor; D1
    is the smallest evaluated horizon >= factor x D0 (a warning when it is not exactly that). `horizon`
    names the column in the messages."""
    what = "resolve_horizons"
    if not factor > 1:
        raise AnalysisError(f"{what}: factor={factor!r} must be > 1 (D1 = factor x d0 lies beyond d0)")
    evaluated = np.unique(table.loc[np.isfinite(table["loss"].to_numpy(float)), "D"].to_numpy(float))
    if evaluated.size == 0:
        raise AnalysisError(f"{what}: no row has a finite loss")
    largest = evaluated.max()
    if d0 is None:
        shorter = evaluated[evaluated <= largest / factor * (1 + _RTOL)]
        if shorter.size == 0:
            raise AnalysisError(f"{what}: no evaluated {horizon!r} is <= the largest ({largest:g}) / factor="
                                f"{factor:g}; lower factor")
        d0 = float(shorter.max())
    if not (np.isfinite(d0) and d0 > 0):
        raise AnalysisError(f"{what}: d0={d0!r} must be a positive number of {horizon!r} units")
    target = factor * d0
    later = evaluated[evaluated >= target * (1 - _RTOL)]
    if later.size == 0:
        raise AnalysisError(f"{what}: no horizon >= D1 = factor x d0 = {factor:g} x {d0:g} = {target:g} in column "
                            f"{horizon!r} (the largest evaluated is {largest:g} = 2^{np.log2(largest):.2f}): "
                            "lower d0 or factor")
    d1 = float(later.min())
    warnings = [] if np.isclose(d1, target, rtol=_RTOL) else \
        [f"no evaluation at D1 = {target:g}: predicting at the next evaluated horizon {d1:g} instead"]
    return float(d0), d1, warnings


@dataclass
class _BatchGrid:
    """One batch size's runs as arrays: cells are the distinct learning rates (seeds of one lr share a cell)."""
    batch: float
    lrs: np.ndarray  # (n_cells,) ascending
    cell: np.ndarray  # (n_runs,) cell of each run
    seeds_per_cell: np.ndarray  # (n_cells,)
    horizons: np.ndarray  # (n_h,) the horizons of step 1, ascending, then D1
    loss: np.ndarray  # (n_runs, n_h)
    log2_norm: np.ndarray  # (n_runs, n_h)
    traj_run: np.ndarray  # (P,) run of each trajectory point
    traj_x: np.ndarray  # (P,) log2 tokens
    traj_y: np.ndarray  # (P,) log2 norm


def _batch_grid(g: pd.DataFrame, d0: float, d1: float, k: int, octaves: float,
                trajectory_octaves: float) -> tuple[_BatchGrid | None, str]:
    """The arrays of one batch size, or (None, why it cannot be used)."""
    run_ids, run_index = np.unique(g["run_id"].to_numpy(str), return_inverse=True)
    run_lr = pd.Series(g["lr"].to_numpy(float)).groupby(run_index).first().to_numpy()
    lrs, cell = np.unique(run_lr, return_inverse=True)
    need = max(k, 3)
    evals = g.assign(_run=run_index, _cell=cell[run_index])[np.isfinite(g["loss"].to_numpy(float))]
    cells_at = evals.groupby("D")["_cell"].nunique()
    lo = d0 / 2.0**octaves
    short = [D for D, n in cells_at.items() if lo * (1 - _RTOL) <= D <= d0 * (1 + _RTOL) and n >= need]
    if not short:
        return None, f"no horizon in [{lo:g}, {d0:g}] has {need} learning rates evaluated"
    if cells_at.get(d1, 0) < need:
        return None, f"fewer than {need} learning rates evaluated at D1 = {d1:g}"
    horizons = np.array(sorted(short) + [d1], float)
    at = evals[evals["D"].isin(horizons)]
    col = np.searchsorted(horizons, at["D"].to_numpy(float))
    loss, log2_norm = (np.full((run_ids.size, horizons.size), np.nan) for _ in range(2))
    loss[at["_run"].to_numpy(), col] = at["loss"].to_numpy(float)
    log2_norm[at["_run"].to_numpy(), col] = at["log2_norm"].to_numpy(float)
    t_lo = d0 / 2.0**trajectory_octaves
    traj = g.assign(_run=run_index)
    traj = traj[(traj["D"] >= t_lo * (1 - _RTOL)) & (traj["D"] <= d0 * (1 + _RTOL))]
    return _BatchGrid(batch=float(g["B"].iloc[0]), lrs=lrs, cell=cell, seeds_per_cell=np.bincount(cell),
                      horizons=horizons, loss=loss, log2_norm=log2_norm, traj_run=traj["_run"].to_numpy(),
                      traj_x=np.log2(traj["D"].to_numpy(float)), traj_y=traj["log2_norm"].to_numpy(float)), ""


def _cell_mean(values: np.ndarray, cell: np.ndarray, n_cells: int, w: np.ndarray) -> np.ndarray:
    """(n_cells, m) weighted mean over each cell's runs of (n_runs, m) values, ignoring NaN."""
    finite = np.isfinite(values)
    member = np.zeros((n_cells, cell.size))
    member[cell, np.arange(cell.size)] = w
    den = member @ finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (member @ np.where(finite, values, 0.0)) / den, np.nan)


def _trajectory_lines(grid: _BatchGrid, w: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) per cell of log2 norm = slope log2 tokens + intercept, weighted OLS over the
    points of the cell's runs (run weights w)."""
    c, wp, x = grid.cell[grid.traj_run], w[grid.traj_run], grid.traj_x
    n = grid.lrs.size
    sw, sx, sy = (np.bincount(c, wp * v, minlength=n) for v in (np.ones_like(x), x, y))
    sxx, sxy = np.bincount(c, wp * x * x, minlength=n), np.bincount(c, wp * x * y, minlength=n)
    det = sw * sxx - sx**2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(det > 1e-9 * np.maximum(sw, 1) ** 2, (sw * sxy - sx * sy) / det, np.nan)
        intercept = (sy - slope * sx) / sw
    return slope, intercept


def _line_at(x: np.ndarray, y: np.ndarray, x_new: float) -> tuple[float, float]:
    """(value at x_new, slope) of the OLS line through the finite points; NaN with < 2 distinct x."""
    keep = np.isfinite(x) & np.isfinite(y)
    if np.unique(x[keep]).size < 2:
        return np.nan, np.nan
    slope, icpt = np.polyfit(x[keep], y[keep], 1)
    return float(icpt + slope * x_new), float(slope)


def _estimate(grid: _BatchGrid, loss_c: np.ndarray, norm_c: np.ndarray, end_c: np.ndarray, k: int) -> dict:
    """Steps 2-7 of the module docstring on one batch size's cell arrays (last column: D1)."""
    u_lr, log2_d = np.log2(grid.lrs), np.log2(grid.horizons)
    n_short = grid.horizons.size - 1
    norm_fits = [parabola_vertex(norm_c[:, j], loss_c[:, j], k) for j in range(grid.horizons.size)]
    lr_fits = [parabola_vertex(u_lr, loss_c[:, j], k) for j in range(grid.horizons.size)]
    u_norm = np.array([f["u_opt"] if f["ok"] else np.nan for f in norm_fits[:n_short]])
    u_lr_opt = np.array([f["u_opt"] if f["ok"] else np.nan for f in lr_fits[:n_short]])
    drift, drift_slope = _line_at(log2_d[:n_short], u_norm, log2_d[-1])
    targets = {"norm_constant": float(np.nanmean(u_norm)) if np.isfinite(u_norm).any() else np.nan,
               "norm_drift": drift}
    out = {"targets": targets, "norm_drift_slope": drift_slope, "norm_fits": norm_fits, "lr_fits": lr_fits,
           "pred": {}, "pred_edge": {}}
    for method, target in targets.items():
        out["pred"][method], out["pred_edge"][method] = first_crossing(u_lr, end_c, target)
    out["pred"]["power_law"], out["power_law_slope"] = _line_at(log2_d[:n_short], u_lr_opt, log2_d[-1])
    out["pred_edge"]["power_law"] = None
    meas = lr_fits[-1]
    out["meas"], out["meas_edge"] = meas["u_opt"], (meas["edge_side"] or ("concave" if meas["concave"] else None))
    out["err"] = {m: out["pred"][m] - out["meas"] for m in METHODS}
    return out


def _point_arrays(grid: _BatchGrid) -> dict:
    """Cell arrays of the data as observed, the trajectory lines and their residuals."""
    w = np.ones(grid.cell.size)
    n = grid.lrs.size
    slope, icpt = _trajectory_lines(grid, w, grid.traj_y)
    c = grid.cell[grid.traj_run]
    resid = grid.traj_y - (icpt[c] + slope[c] * grid.traj_x)
    n_pts = np.bincount(c, minlength=n)
    dof = np.where(n_pts > 2, np.sqrt(n_pts / np.maximum(n_pts - 2, 1)), np.nan)[c]
    return {"loss_c": _cell_mean(grid.loss, grid.cell, n, w), "norm_c": _cell_mean(grid.log2_norm, grid.cell, n, w),
            "slope": slope, "intercept": icpt, "end_c": icpt + slope * np.log2(grid.horizons[-1]),
            "n_traj_points": n_pts, "traj_resid": (resid * dof)[np.isfinite(dof)]}


def _loss_residuals(grids: list[_BatchGrid], points: list[dict]) -> dict[float, np.ndarray]:
    """Per horizon, the residuals of the loss-vs-log2-lr parabolas of every batch size, each inflated by
    sqrt(n / (n - 3)). Per horizon, as the misfit of a parabola (and the noise) changes with D."""
    pools: dict[float, list] = {}
    for grid, est in zip(grids, points):
        for h, f in zip(grid.horizons, est["lr_fits"]):
            r = f["residuals"]
            if r.size > 3:
                pools.setdefault(float(h), []).append(r * np.sqrt(r.size / (r.size - 3)))
    return {h: np.concatenate(v) for h, v in pools.items()}


def _draw(rng: np.random.Generator, pool: np.ndarray, shape) -> np.ndarray:
    return rng.choice(pool, shape) if pool.size else np.zeros(shape)


def _replicate(grid: _BatchGrid, base: dict, scheme: str, pools: dict, rng: np.random.Generator, k: int) -> dict:
    n = grid.lrs.size
    if scheme == "seeds":
        w = np.zeros(grid.cell.size)
        for c in range(n):  # resample the runs (seeds) of each lr cell
            members = np.flatnonzero(grid.cell == c)
            np.add.at(w, rng.choice(members, members.size), 1.0)
        loss_c = _cell_mean(grid.loss, grid.cell, n, w)
        norm_c = _cell_mean(grid.log2_norm, grid.cell, n, w)
        slope, icpt = _trajectory_lines(grid, w, grid.traj_y)
    else:
        empty = np.empty(0)
        loss_noise = np.column_stack([_draw(rng, pools["loss"].get(float(h), empty), n) for h in grid.horizons])
        loss_c = base["loss_c"] + loss_noise
        norm_c = base["norm_c"] + _draw(rng, pools["norm"], base["norm_c"].shape)
        slope, icpt = _trajectory_lines(grid, np.ones(grid.cell.size),
                                        grid.traj_y + _draw(rng, pools["norm"], grid.traj_y.shape))
    return _estimate(grid, loss_c, norm_c, icpt + slope * np.log2(grid.horizons[-1]), k)


def _scheme(grids: list[_BatchGrid]) -> str:
    return "seeds" if all((g.seeds_per_cell >= 2).all() for g in grids) else "residuals"


@public
def norm_guided_prediction(table: pd.DataFrame, *, d0: float | None = None, factor: float = 4.0, k: int = 5,
                           octaves: float = 2.0, trajectory_octaves: float = 2.0, n_boot: int = 500,
                           level: float = 0.95, seed: int = 0, horizon: str = "D") -> dict:
    """Steps 1-7 of the module docstring on a norm_curve_table. Returns d0, d1, warnings, bootstrap (the
    scheme, with its pools' sizes) and tables: per_batch (one row per batch size: the predicted optimal
    norms, log2 eta per method with intervals, the measured log2 eta*(D1), errors with intervals, flags),
    errors (one row per method: MAE and mean error with intervals over the uncensored batch sizes),
    optima (per batch and horizon used: the optimal log2 norm and log2 eta*), trajectories (per batch
    and lr: slope, intercept, extrapolated and actual log2 norm at D1)."""
    what = "norm_guided_prediction"
    require_frame(table, what)
    require_columns(table, ["run_id", "B", "lr", "D", "loss", "log2_norm"], what)
    if k < 3:
        raise AnalysisError(f"{what}: k={k!r} must be >= 3 (a parabola has three coefficients)")
    if not (octaves > 0 and trajectory_octaves > 0):
        raise AnalysisError(f"{what}: octaves={octaves!r} and trajectory_octaves={trajectory_octaves!r} must be > 0")
    d0, d1, warnings = resolve_horizons(table, d0, factor, horizon)
    grids = []
    for b, g in table.groupby("B", sort=True):
        grid, why = _batch_grid(g, d0, d1, k, octaves, trajectory_octaves)
        if grid is None:
            warnings.append(f"batch size {b:g} skipped: {why}")
        else:
            grids.append(grid)
    if not grids:
        raise AnalysisError(f"{what}: no batch size can be used at d0={d0:g}, D1={d1:g} ({'; '.join(warnings)})")
    bases = [_point_arrays(g) for g in grids]
    points = [_estimate(g, b["loss_c"], b["norm_c"], b["end_c"], k) for g, b in zip(grids, bases)]
    scheme = _scheme(grids)
    pools = {"loss": _loss_residuals(grids, points), "norm": np.concatenate([b["traj_resid"] for b in bases])}
    if scheme == "residuals" and n_boot > 0 and not any(np.any(v) for v in pools["loss"].values()):
        warnings.append("the loss parabolas left no residuals: the bootstrap intervals are degenerate")
    rng = np.random.default_rng(seed)
    reps = [[_replicate(g, b, scheme, pools, rng, k) for _ in range(n_boot)] for g, b in zip(grids, bases)]
    per_batch = pd.DataFrame([_batch_row(g, b, p, r, level) for g, b, p, r in zip(grids, bases, points, reps)])
    for g, b in zip(grids, bases):
        if not (np.diff(b["end_c"][np.isfinite(b["end_c"])]) > 0).all():
            warnings.append(f"batch size {g.batch:g}: the extrapolated norm at D1 does not grow with the lr everywhere "
                            "(the first crossing is used)")
    warnings += _row_warnings(per_batch)
    return {"d0": d0, "d1": d1, "warnings": warnings, "per_batch": per_batch,
            "errors": _error_summary(per_batch, reps, level),
            "optima": pd.concat([_optima_rows(g, p) for g, p in zip(grids, points)], ignore_index=True),
            "trajectories": pd.concat([_trajectory_rows(g, b) for g, b in zip(grids, bases)], ignore_index=True),
            "bootstrap": {"scheme": scheme, "n_boot": n_boot, "level": level, "seed": seed,
                          "loss_residual_sd": {f"{h:g}": float(np.std(v)) for h, v in pools["loss"].items()},
                          "norm_residual_sd": float(np.std(pools["norm"])) if pools["norm"].size else 0.0},
            "settings": {"factor": factor, "k": k, "octaves": octaves, "trajectory_octaves": trajectory_octaves}}


def _interval(samples, level: float) -> list[float]:
    return list(percentile_interval(np.asarray(samples, float), level))


def _batch_row(grid: _BatchGrid, base: dict, point: dict, reps: list[dict], level: float) -> dict:
    actual_d1 = base["norm_c"][:, -1]
    meas_norm = point["norm_fits"][-1]
    row = {"B": grid.batch, "n_lrs": int(grid.lrs.size), "n_seeds": int(grid.seeds_per_cell.max()),
           "horizons": [float(h) for h in grid.horizons[:-1]],
           "log2_eta_meas": point["meas"], "log2_eta_meas_ci": _interval([r["meas"] for r in reps], level),
           "meas_edge": point["meas_edge"] or "",
           "log2_norm_opt_d1": meas_norm["u_opt"] if meas_norm["ok"] else np.nan,
           "norm_drift_per_octave": point["norm_drift_slope"], "power_law_slope": point["power_law_slope"],
           "trajectory_bias": float(np.nanmean(base["end_c"] - actual_d1))}
    for m in METHODS:
        if m in point["targets"]:
            row[f"log2_norm_target_{m}"] = point["targets"][m]
            row[f"log2_norm_target_{m}_ci"] = _interval([r["targets"][m] for r in reps], level)
        row[f"log2_eta_{m}"] = point["pred"][m]
        row[f"log2_eta_{m}_ci"] = _interval([r["pred"][m] for r in reps], level)
        row[f"{m}_edge"] = point["pred_edge"][m] or ""
        row[f"err_{m}"] = point["err"][m]
        row[f"err_{m}_ci"] = _interval([r["err"][m] for r in reps], level)
        row[f"{m}_censored"] = bool(point["meas_edge"] or point["pred_edge"][m] or not np.isfinite(point["err"][m]))
    return row


def _error_summary(per_batch: pd.DataFrame, reps: list[list[dict]], level: float) -> pd.DataFrame:
    """Per method: mean |error| and mean error over the uncensored batch sizes, with bootstrap intervals
    (each replicate averages over the same batch sizes)."""
    rows = []
    for m in METHODS:
        use = np.flatnonzero(~per_batch[f"{m}_censored"].to_numpy(bool))
        err = per_batch[f"err_{m}"].to_numpy(float)[use]
        n_boot = len(reps[0]) if reps else 0
        rep_err = np.array([[r["err"][m] for r in reps[i]] for i in use], float).reshape(len(use), n_boot)
        with np.errstate(invalid="ignore"), pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore", RuntimeWarning)  # a replicate with every error NaN
            mae_reps, bias_reps = np.nanmean(np.abs(rep_err), axis=0), np.nanmean(rep_err, axis=0)
        rows.append({"method": m, "n_batches": int(use.size),
                     "censored": int(len(per_batch) - use.size),
                     "mae_log2": float(np.mean(np.abs(err))) if use.size else np.nan,
                     "mae_log2_ci": _interval(mae_reps, level) if use.size else [np.nan, np.nan],
                     "mean_err_log2": float(np.mean(err)) if use.size else np.nan,
                     "mean_err_log2_ci": _interval(bias_reps, level) if use.size else [np.nan, np.nan]})
    return pd.DataFrame(rows)


def _optima_rows(grid: _BatchGrid, point: dict) -> pd.DataFrame:
    n_short = grid.horizons.size - 1
    return pd.DataFrame([{"B": grid.batch, "D": float(h), "role": "short" if j < n_short else "target",
                          "log2_norm_opt": nf["u_opt"], "norm_ok": nf["ok"], "log2_lr_opt": lf["u_opt"],
                          "lr_ok": lf["ok"], "lr_edge": lf["edge_side"] or ("concave" if lf["concave"] else ""),
                          "loss_opt": lf["y_opt"]}
                         for j, (h, nf, lf) in enumerate(zip(grid.horizons, point["norm_fits"], point["lr_fits"]))])


def _trajectory_rows(grid: _BatchGrid, base: dict) -> pd.DataFrame:
    return pd.DataFrame({"B": grid.batch, "lr": grid.lrs, "slope": base["slope"], "intercept": base["intercept"],
                         "n_points": base["n_traj_points"], "log2_norm_d1_pred": base["end_c"],
                         "log2_norm_d1_actual": base["norm_c"][:, -1]})


def _row_warnings(per_batch: pd.DataFrame) -> list[str]:
    out = []
    for _, r in per_batch.iterrows():
        if r["meas_edge"]:
            out.append(f"batch size {r['B']:g}: the measured eta*(D1) is censored ({r['meas_edge']} edge of the lr "
                       "grid): its errors are bounds, left out of the summary")
        for m in METHODS:
            if r[f"{m}_edge"]:
                out.append(f"batch size {r['B']:g}: {m} prediction at the {r[f'{m}_edge']} end of the lr grid "
                           "(a bound, left out of the summary)")
            elif not np.isfinite(r[f"log2_eta_{m}"]):
                out.append(f"batch size {r['B']:g}: no {m} prediction (fewer than 2 interior optima at the "
                           "horizons <= d0)")
    return out


@public
def lr_optima_by_horizon(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """eta* per (B, D) at every evaluated horizon with >= 3 learning rates (the figure's points):
    analysis.optimum.find_optima, quadratic in log2 lr on the k points nearest the argmin, seeds averaged."""
    evals = table[np.isfinite(table["loss"].to_numpy(float))]
    counts = evals.groupby(["B", "D"])["lr"].transform("nunique")
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore", AnalysisWarning)
        return find_optima(evals[counts >= 3], "lr", "loss", ["B", "D"], method="quadratic", k=k, seed_col="seed",
                           n_boot=0, empty="keep")

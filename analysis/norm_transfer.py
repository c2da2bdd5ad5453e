"""Norm transfer ("Optimal Scaling Needs Optimal Norm", Filatov et al. 2025, arXiv 2510.03871).

Workflow, on one row per (run, horizon D in tokens):
1. `at_horizons`: losses and norms at each validation horizon, joined with the run config, optionally
   smoothed over neighbouring evaluations. Then which rows are horizons: `positive_horizons` drops D <= 0
   (the step-0 evaluation: no training yet, and log2 D = -inf); `final_evaluations` keeps only the last
   evaluation of a run whose schedule decays (run.schedule not constant/warmup): its intermediate
   evaluations are not the end of a schedule, so its one horizon is its length; `within_horizons`
   applies optional [min, max] bounds; `aligned_horizons` keeps the horizons evaluated for enough batch
   sizes (default: all of them), since B* compares batch sizes at one D.
2. `optimal_norms`: per (B, D), loss and log2 norm averaged over seeds at each lr; the parabola of loss
   against log2 of the output norm on the points within `window` octaves of norm of the argmin (at
   least 3; paper App. A.4); optimal norm and loss, with an interval (bootstrap over seeds when there are
   several, else over the fitted points, else the grid resolution); eta* interpolated (log2 lr linear in
   log2 norm between the two lrs whose norms bracket the optimum; lr_grid keeps the grid value); edge,
   concavity and below-every-observed-loss flags, n_points fitted, n_seeds.
3. `norm_per_horizon`: per D, B* (the batch with the lowest optimal loss) and the optimal norm there;
   `norm_transfer_summary`: mean and spread of that norm over horizons with an interior optimum.
4. `fit_lr_joint` (log2 eta* = alpha log2 B + beta log2 D + gamma, paper Fig. 3b), `fit_bstar`
   (B* = a D^b over the horizons whose B* is not at the edge of the batch grid, Fig. 7b), and
   `first_band_horizon` + `fit_first_band` (log2 eta = c log2 B + beta log2 D_first + gamma, Fig. 3a, with
   D_first interpolated in log2 D and runs already past the band's edge at their first evaluation censored).
"""

from __future__ import annotations

import math
import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.powerlaw import fit_log_linear, fit_power_law
from analysis.validate import as_list, iter_groups, numeric, public, require_columns, require_frame

# schedules that do not read the run length (scaling.schedules.SCHEDULES): the lr is flat after any
# warmup, so every evaluation of such a run is a horizon
CONSTANT_LR_SCHEDULES = ("constant", "warmup")


def horizon_label(d: float) -> str:
    """2^k for a horizon in tokens (one decimal when D is not a power of two)."""
    k = math.log2(d) if d > 0 else float("-inf")
    return f"2^{k:.0f}" if abs(k - round(k)) < 1e-9 else f"2^{k:.1f}"


def _labels(values, limit: int = 6) -> str:
    shown = ", ".join(horizon_label(float(v)) for v in list(values)[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


@public
def at_horizons(curves: pd.DataFrame, runs: pd.DataFrame, value_cols: Sequence[str] = ("val_loss",),
                config_cols: Sequence[str] = (), horizon: str = "tokens", require: str | None = None,
                smooth: float = 0.0) -> pd.DataFrame:
    """One row per (run, horizon) from the curves rows where `require` (default: the first value
    column) is logged, joined with config_cols from runs. Values logged on separate lines at the same
    horizon (a training line with the norms, an eval line with val_loss) are merged. smooth > 0: each
    value becomes the mean over that run's rows within +-smooth horizon units, and <col>_sd their spread.
    Curves of runs absent from `runs` are dropped with an AnalysisWarning naming some (they have no
    config to group them by); none left raises."""
    value_cols = list(value_cols)
    require = require or value_cols[0]
    what = "at_horizons"
    require_frame(curves, f"{what} (curves)")
    require_frame(runs, f"{what} (runs)")
    require_columns(curves, ["run_id", horizon, *value_cols], what)
    require_columns(runs, ["run_id", *config_cols], what)
    rows = curves[["run_id", horizon, *value_cols]].copy()
    rows["run_id"] = rows["run_id"].astype(str)
    known = set(runs["run_id"].astype(str))
    orphan = ~rows["run_id"].isin(known)
    if orphan.any():
        ids = sorted(rows.loc[orphan, "run_id"].unique())
        pywarnings.warn(f"{what}: curves of {len(ids)} run(s) absent from the runs table dropped "
                        f"({', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}): they have no config", AnalysisWarning,
                        stacklevel=3)
        rows = rows[~orphan]
        if rows.empty:
            raise AnalysisError(f"{what}: no curve rows belong to a run of the runs table")
    if rows.duplicated(["run_id", horizon]).any():  # train and eval lines of one step: merge their values
        rows = rows.groupby(["run_id", horizon], sort=False, as_index=False).first()
    rows = rows[rows[require].notna()]
    if rows.empty:
        raise AnalysisError(f"{what}: no curve row logs {require!r}")
    if smooth > 0:
        parts = []
        for rid, g in rows.groupby("run_id", sort=False):
            g = g.sort_values(horizon)
            h = g[horizon].to_numpy(float)
            lo, hi = np.searchsorted(h, h - smooth, "left"), np.searchsorted(h, h + smooth, "right")
            for c in value_cols:
                v = g[c].to_numpy(float)
                g[c + "_sd"] = [np.nanstd(v[a:b]) for a, b in zip(lo, hi)]
                g[c] = [np.nanmean(v[a:b]) for a, b in zip(lo, hi)]
            parts.append(g)
        rows = pd.concat(parts) if parts else rows
    cfg = runs[["run_id", *config_cols]].astype({"run_id": str}).drop_duplicates("run_id")
    return rows.merge(cfg, on="run_id", how="inner").reset_index(drop=True)


# --- which rows are horizons -------------------------------------------------------------------------------

@public
def positive_horizons(table: pd.DataFrame, horizon: str = "D") -> tuple[pd.DataFrame, str | None]:
    """The rows with D > 0, and a sentence saying how many were dropped (None if none): the step-0
    evaluation is no horizon (nothing trained yet) and has no log2 D."""
    require_columns(table, [horizon], "positive_horizons")
    d = numeric(table, horizon, "positive_horizons")
    keep = np.isfinite(d) & (d > 0)
    if keep.all():
        return table, None
    return table[keep], (f"{int((~keep).sum())} row(s) at a horizon {horizon} <= 0 (the step-0 evaluation) "
                         "dropped: a horizon needs trained tokens")


def decaying(schedules: pd.Series) -> np.ndarray:
    """Whether each run's schedule decays over its length (anything but CONSTANT_LR_SCHEDULES)."""
    s = schedules.astype("string")
    return (s.notna() & ~s.isin(CONSTANT_LR_SCHEDULES)).to_numpy(bool)


@public
def final_evaluations(table: pd.DataFrame, schedule: str, run: str = "run_id", horizon: str = "D",
                      state: str = "state") -> tuple[pd.DataFrame, str | None]:
    """Rows of constant-lr runs unchanged; of each run whose `schedule` decays, only its last evaluation
    (its length: the horizon the schedule was planned for). A diverged decaying run stopped before its
    length, so it is dropped. Returns the rows and a sentence saying what was done (None if nothing)."""
    require_columns(table, [schedule, run, horizon], "final_evaluations")
    decays = decaying(table[schedule])
    if not decays.any():
        return table, None
    diverged = decays & ((table[state].astype(str) == "diverged").to_numpy() if state in table else False)
    last = table[horizon].eq(table.groupby(run)[horizon].transform("max")).to_numpy()
    kept = table[~decays | (last & ~diverged)]
    names = ", ".join(sorted(table.loc[decays, schedule].astype(str).unique()))
    msg = (f"{table.loc[decays, run].nunique()} run(s) with a decaying schedule ({names}): only each run's final "
           "evaluation is a horizon")
    if diverged.any():
        msg += (f"; {table.loc[diverged, run].nunique()} diverged one(s) dropped (they stopped before their "
                "length)")
    return kept, msg


def horizon_bounds(horizons) -> tuple[float, float]:
    """(min, max) tokens from the recipe option horizons: None, or [min, max] with null for no bound."""
    if horizons is None:
        return (0.0, math.inf)
    if not isinstance(horizons, (list, tuple)) or len(horizons) != 2:
        raise AnalysisError(f"norm_transfer: option horizons={horizons!r} must be [min, max] bounds in tokens "
                            "(null for no bound), e.g. [131072, 1048576]")
    try:
        lo, hi = (float(v) if v is not None else default for v, default in zip(horizons, (0.0, math.inf)))
    except (TypeError, ValueError):
        raise AnalysisError(f"norm_transfer: option horizons={horizons!r} must hold numbers (tokens) or null") from None
    if not lo <= hi:
        raise AnalysisError(f"norm_transfer: option horizons={horizons!r} has min > max")
    return lo, hi


@public
def within_horizons(table: pd.DataFrame, bounds: tuple[float, float], horizon: str = "D") -> pd.DataFrame:
    """Rows with min <= D <= max; none left raises, listing the horizons there are."""
    d = table[horizon].to_numpy(float)
    keep = (d >= bounds[0]) & (d <= bounds[1])
    if not keep.any():
        raise AnalysisError(f"norm_transfer: option horizons={list(bounds)} leaves no horizon (there are "
                            f"{_labels(np.unique(d))} tokens)")
    return table[keep]


@public
def aligned_horizons(table: pd.DataFrame, min_batches: int | None = None, batch: str = "B",
                     horizon: str = "D") -> tuple[pd.DataFrame, str | None]:
    """The rows at horizons evaluated for at least min_batches batch sizes (None: every batch size in
    the table), and a sentence naming the horizons dropped with the batch sizes they have (None if
    none). B* compares batch sizes at one horizon: a horizon reached by fewer is no comparison."""
    require_columns(table, [batch, horizon], "aligned_horizons")
    n_all = table[batch].nunique()
    need = n_all if min_batches is None else int(min_batches)
    if need < 1:
        raise AnalysisError(f"aligned_horizons: min_batches={min_batches!r} must be at least 1")
    present = table.groupby(horizon)[batch].unique()
    short = present[present.map(len) < need]
    if len(short) == len(present):
        raise AnalysisError(f"aligned_horizons: no horizon is evaluated for min_batches={need} batch sizes "
                            f"(the runs have {n_all})")
    if short.empty:
        return table, None
    shown = "; ".join(f"{horizon}={horizon_label(d)} ({batch}={', '.join(f'{b:g}' for b in sorted(bs))})"
                      for d, bs in list(short.items())[:6])
    more = f" and {len(short) - 6} more" if len(short) > 6 else ""
    msg = (f"horizons do not line up across batch sizes: {len(short)} horizon(s) evaluated for fewer than {need} "
           f"of the {n_all} batch sizes dropped ({shown}{more})")
    return table[~table[horizon].isin(short.index)], msg


# --- per (B, D): the optimal norm ----------------------------------------------------------------------------

def _nanmean_rows(m: np.ndarray) -> np.ndarray:
    """Row means over the finite entries (NaN where a row has none), without numpy's empty-slice warning."""
    ok = np.isfinite(m)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, m, 0.0).sum(axis=1) / n, np.nan)


def window_points(u: np.ndarray, y: np.ndarray, window: float, min_points: int = 3) -> np.ndarray:
    """Indices (ascending u) of the points within `window` of the argmin's u; at least min_points (the
    nearest in u), so a parabola is determined. A window in log2 norm keeps undertrained far-away
    points out of the fit, whatever the grid's density."""
    dist = np.abs(u - u[int(np.argmin(y))])
    inside = np.flatnonzero(dist <= window + 1e-9)
    if inside.size >= min_points:
        return inside
    return np.sort(np.argsort(dist, kind="stable")[:min_points])


def _vertex(u: np.ndarray, y: np.ndarray, w: np.ndarray | None, intercept: float | None) -> dict:
    """(Weighted) least-squares parabola y = a u^2 + b u + c (c fixed when intercept is given) and its
    vertex; side: "low"/"high" when the vertex lies outside the points (a bound), concave when a <= 0."""
    A = np.column_stack([u**2, u] + ([np.ones_like(u)] if intercept is None else []))
    target = y if intercept is None else y - intercept
    sw = np.sqrt(np.ones_like(u) if w is None else w)
    coef = np.linalg.lstsq(A * sw[:, None], target * sw, rcond=None)[0]
    a, b = float(coef[0]), float(coef[1])
    c = float(coef[2]) if intercept is None else float(intercept)
    out = {"coef_a": a, "coef_b": b, "coef_c": c, "u_vertex": np.nan, "y_vertex": np.nan, "side": None,
           "concave": not a > 0}
    if out["concave"]:
        return out
    u_star = -b / (2 * a)
    out["side"] = "low" if u_star < u[0] else "high" if u_star > u[-1] else None
    out.update(u_vertex=u_star, y_vertex=c - b * b / (4 * a))
    return out


def norm_parabola(u: np.ndarray, y: np.ndarray, window: float, intercept: float | None = None,
                  w: np.ndarray | None = None) -> dict:
    """Optimum of loss y over u = log2 norm (u ascending): the vertex of the parabola through the points
    within `window` of the argmin. The argmin is kept, flagged, when the parabola opens downward or its
    vertex falls outside the fitted points (edge_side: a bound); an argmin at the lowest or highest norm
    tried is flagged too (the loss was still falling there). n_points: points fitted (0: argmin only)."""
    n = len(u)
    i = int(np.argmin(y))
    out = {"u_opt": float(u[i]), "y_opt": float(y[i]), "edge_side": "low" if i == 0 else "high" if i == n - 1 else None,
           "concave": False, "n_points": 0, "coef_a": np.nan, "coef_b": np.nan, "coef_c": np.nan,
           "fit_lo": np.nan, "fit_hi": np.nan}
    if n < 3:
        return out
    sel = window_points(u, y, window)
    v = _vertex(u[sel], y[sel], None if w is None else w[sel], intercept)
    out.update({k: v[k] for k in ("coef_a", "coef_b", "coef_c", "concave")}, n_points=len(sel),
               fit_lo=float(u[sel[0]]), fit_hi=float(u[sel[-1]]))
    if v["concave"]:
        return out
    if v["side"] is not None:
        out["edge_side"] = v["side"]
        return out
    out.update(u_opt=float(v["u_vertex"]), y_opt=float(v["y_vertex"]))
    return out


def interpolate_lr(log2_lr: np.ndarray, u: np.ndarray, u_opt: float) -> float:
    """log2 lr at which the norm reaches u_opt: log2 norm is linear in log2 lr between the two
    neighbouring lrs whose norms bracket u_opt (norm grows with lr at a fixed horizon for these runs;
    where it does not, the bracketing pair nearest the grid lr is used). Without a bracket, the grid lr
    whose norm is nearest."""
    order = np.argsort(log2_lr)
    x, v = log2_lr[order], u[order]
    d = v - u_opt
    nearest = int(np.argmin(np.abs(d)))
    pairs = np.flatnonzero(d[:-1] * d[1:] <= 0)
    if not np.isfinite(u_opt) or pairs.size == 0:
        return float(x[nearest])
    j = int(pairs[np.argmin(np.abs(pairs + 0.5 - nearest))])
    if v[j + 1] == v[j]:
        return float(x[j])
    return float(x[j] + (u_opt - v[j]) / (v[j + 1] - v[j]) * (x[j + 1] - x[j]))


def _estimate(log2_lr, u, y, w, window, intercept) -> dict:
    """norm_parabola on the points sorted by norm, plus eta* interpolated and on the grid."""
    ok = np.isfinite(u) & np.isfinite(y)
    if not ok.any():  # a bootstrap replicate of seeds that all miss this group
        return {"u_opt": np.nan, "log2_lr_opt": np.nan}
    log2_lr, u, y = log2_lr[ok], u[ok], y[ok]
    w = None if w is None else w[ok]
    order = np.argsort(u, kind="stable")
    est = norm_parabola(u[order], y[order], window, intercept, None if w is None else w[order])
    est["log2_lr_opt"] = interpolate_lr(log2_lr, u, est["u_opt"])
    est["log2_lr_grid"] = float(log2_lr[np.argmin(np.abs(u - est["u_opt"]))])
    est["y_min_observed"] = float(y.min())
    est["dip_allowed"] = _vertex_dip(u[order], est)
    return est


def _vertex_dip(u: np.ndarray, est: dict) -> float:
    """How far an exact parabola's vertex can lie below the lowest observed point: a (h/2)^2, h the
    spacing of the two points that bracket the vertex (0 when the argmin is kept)."""
    if not np.isfinite(est["coef_a"]) or est["concave"] or est["edge_side"] is not None:
        return 0.0
    j = int(np.clip(np.searchsorted(u, est["u_opt"]), 1, len(u) - 1))
    return float(est["coef_a"] * ((u[j] - u[j - 1]) / 2) ** 2)


def _bootstrap_fitted_points(u, y, est, intercept, n_boot, rng) -> np.ndarray:
    """Vertices of parabolas refitted to the fitted points resampled with replacement (one seed)."""
    inw = (u >= est["fit_lo"]) & (u <= est["fit_hi"])
    uw, yw = u[inw], y[inw]
    out = np.full(n_boot, np.nan)
    for r in range(n_boot):
        idx = np.sort(rng.integers(0, len(uw), len(uw)))
        if len(np.unique(uw[idx])) >= 3:
            v = _vertex(uw[idx], yw[idx], None, intercept)
            out[r] = v["u_vertex"] if v["side"] is None and not v["concave"] else uw[idx][np.argmin(yw[idx])]
    return out


def _grid_resolution(u: np.ndarray, u_opt: float) -> tuple[float, float]:
    """Halfway to the neighbouring grid points around u_opt (or the half step beyond an edge)."""
    if len(u) < 2:
        return (u_opt, u_opt)
    step = float(np.median(np.diff(np.sort(u))))
    left, right = u[u < u_opt - 1e-12], u[u > u_opt + 1e-12]
    lo = (u_opt + left.max()) / 2 if left.size else u_opt - step / 2
    hi = (u_opt + right.min()) / 2 if right.size else u_opt + step / 2
    return (float(lo), float(hi))


def _group_optimum(g, norm, loss, lr, seed_col, weights, window, intercept, n_boot, level, rng):
    """One (B, D) group: the optimum on the seed-averaged points and its interval; replicate log2 eta*
    from the bootstrap over seeds (NaN without one)."""
    usable = np.isfinite(g[loss].to_numpy(float)) & np.isfinite(g[norm].to_numpy(float))
    n_bad = int((~usable).sum())
    good = g[usable].assign(_u=np.log2(g.loc[usable, norm].to_numpy(float)),
                            _s=g.loc[usable, seed_col].to_numpy() if seed_col else 0)
    if good.empty:
        return None, n_bad, np.full(n_boot, np.nan)
    # one row per lr, one column per seed: average seeds per point, resample whole seeds
    losses = good.groupby([lr, "_s"])[loss].mean().unstack("_s")
    norms = good.groupby([lr, "_s"])["_u"].mean().unstack("_s").reindex(index=losses.index, columns=losses.columns)
    log2_lr = np.log2(losses.index.to_numpy(float))
    L, U = losses.to_numpy(float), norms.to_numpy(float)
    w = good.groupby(lr)[weights].mean().reindex(losses.index).to_numpy(float) if weights else None
    est = _estimate(log2_lr, _nanmean_rows(U), _nanmean_rows(L), w, window, intercept)
    n_seeds = L.shape[1]
    u_samples, lr_samples = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    interval = "grid resolution"
    if n_boot > 0 and n_seeds >= 2:
        for r in range(n_boot):
            pick = rng.integers(0, n_seeds, n_seeds)
            e = _estimate(log2_lr, _nanmean_rows(U[:, pick]), _nanmean_rows(L[:, pick]), w, window, intercept)
            u_samples[r], lr_samples[r] = e["u_opt"], e["log2_lr_opt"]
        interval = "bootstrap over seeds"
    elif n_boot > 0 and est["n_points"] >= 4:  # 3 points resample to the same parabola: no spread to read
        ok = np.isfinite(U[:, 0]) & np.isfinite(L[:, 0])
        order = np.argsort(U[ok, 0])
        u_samples = _bootstrap_fitted_points(U[ok, 0][order], L[ok, 0][order], est, intercept, n_boot, rng)
        interval = "bootstrap over fitted points"
    lo, hi = percentile_interval(u_samples, level)
    if not np.isfinite(lo):
        lo, hi = _grid_resolution(_nanmean_rows(U), est["u_opt"])
        interval = "grid resolution"
    if est["edge_side"] is not None:  # censored: the optimum lies at or beyond the last value tried
        lo, hi = (-np.inf, est["u_opt"]) if est["edge_side"] == "low" else (est["u_opt"], np.inf)
        interval = "censored at the grid edge (a bound)"
    est.update(lo=lo, hi=hi, interval=interval, n_seeds=n_seeds, n_lrs=len(log2_lr))
    return est, n_bad, lr_samples


def _optimum_row(est: dict | None, n_bad: int, below_tol: float) -> dict:
    if est is None:
        return {"norm_opt": np.nan, "log2_norm_opt": np.nan, "log2_norm_lo": np.nan, "log2_norm_hi": np.nan,
                "loss_opt": np.nan, "lr_opt": np.nan, "lr_grid": np.nan, "at_edge": False, "edge_side": None,
                "concave": False, "ok": False, "below_observed": False, "n_points": 0, "n_lrs": 0, "n_seeds": 0,
                "n_diverged": n_bad, "interval": "no finite points", "coef_a": np.nan, "coef_b": np.nan,
                "coef_c": np.nan, "log2_norm_fit_lo": np.nan, "log2_norm_fit_hi": np.nan}
    at_edge = est["edge_side"] is not None
    # below every observed loss by more than the parabola's own dip between grid points plus noise
    gap = est["y_min_observed"] - est["y_opt"] - est["dip_allowed"]
    return {"norm_opt": 2.0 ** est["u_opt"], "log2_norm_opt": est["u_opt"], "log2_norm_lo": est["lo"],
            "log2_norm_hi": est["hi"], "loss_opt": est["y_opt"], "lr_opt": 2.0 ** est["log2_lr_opt"],
            "lr_grid": 2.0 ** est["log2_lr_grid"], "at_edge": at_edge, "edge_side": est["edge_side"],
            "concave": est["concave"], "ok": not at_edge and not est["concave"],
            "below_observed": bool(gap > below_tol * abs(est["y_min_observed"])), "n_points": est["n_points"],
            "n_lrs": est["n_lrs"], "n_seeds": est["n_seeds"], "n_diverged": n_bad, "interval": est["interval"],
            "coef_a": est["coef_a"], "coef_b": est["coef_b"], "coef_c": est["coef_c"],
            "log2_norm_fit_lo": est["fit_lo"], "log2_norm_fit_hi": est["fit_hi"]}


@public
def optimal_norms(table: pd.DataFrame, norm: str = "output_norm", loss: str = "loss", lr: str = "lr",
                  by: str | Sequence[str] = ("B", "D"), *, window: float = 1.0, seed_col: str | None = None,
                  intercept: float | None = None, weights: str | None = None, n_boot: int = 200,
                  level: float = 0.95, seed: int = 0, below_tol: float = 0.002, empty: str = "raise",
                  return_samples: bool = False):
    """Per group: the parabola of loss vs log2(norm) on the points within `window` octaves of norm of the
    argmin, at least 3 (paper App. A.4; optionally with the intercept fixed to the loss at init).

    With seed_col, loss and log2 norm are first averaged over seeds at each lr, and the interval comes
    from resampling whole seeds; with one seed, from resampling the fitted points (>= 4 of them), else
    the grid resolution; an edge optimum gets a one-sided interval. eta* (lr_opt) is interpolated at the
    optimal norm (see interpolate_lr); lr_grid is the lr of the point whose norm is nearest.

    Columns: group keys, norm_opt, log2_norm_opt, log2_norm_lo/hi, loss_opt, lr_opt, lr_grid, at_edge,
    edge_side, concave, ok (interior and convex), below_observed (the fitted minimum lies under every
    observed loss of the group by more than an exact parabola's dip between the grid points bracketing
    its vertex plus below_tol (relative, for noise): the parabola misdescribes the points),
    n_points (fitted), n_lrs, n_seeds, n_diverged (rows with a non-finite loss or norm, left out),
    interval, coef_a/b/c (loss = a u^2 + b u + c, u = log2 norm), log2_norm_fit_lo/hi (the fitted
    points' span). A group without finite points raises (empty="raise") or gets a NaN row with ok=False
    (empty="keep"). return_samples: also an (n_boot, n_groups) array of bootstrap eta* (NaN where the
    group has no bootstrap over seeds)."""
    by = as_list(by)
    what = "optimal_norms"
    require_frame(table, what)
    require_columns(table, [norm, loss, lr, *by, seed_col, weights], what)
    if not (isinstance(window, (int, float)) and window > 0):
        raise AnalysisError(f"{what}: window={window!r} must be a positive number (octaves of norm)")
    nv, lv = numeric(table, norm, what), numeric(table, lr, what)
    if (np.isfinite(nv) & (nv <= 0)).any() or (np.isfinite(lv) & (lv <= 0)).any():
        col = norm if (np.isfinite(nv) & (nv <= 0)).any() else lr
        raise AnalysisError(f"{what}: column {col!r} has non-positive values; the optimum is taken in log2")
    rng = np.random.default_rng(seed)
    rows, samples = [], []
    for key, label, g in iter_groups(table, by, what):
        est, n_bad, lr_samp = _group_optimum(g, norm, loss, lr, seed_col, weights, window, intercept, n_boot,
                                             level, rng)
        if est is None and empty == "raise":
            raise AnalysisError(f"{what}: group {label} has no finite points ({n_bad} diverged)")
        rows.append({**dict(zip(by, key)), **_optimum_row(est, n_bad, below_tol)})
        samples.append(2.0 ** lr_samp)
    if not rows:
        raise AnalysisError(f"{what}: no group left (every row has a NaN in {', '.join(map(repr, by))})")
    out = pd.DataFrame(rows)
    if return_samples:
        return out, np.column_stack(samples) if samples else np.empty((n_boot, 0))
    return out


@public
def parabola_warnings(optima: pd.DataFrame, by: Sequence[str] = ("B", "D")) -> list[str]:
    """Plain sentences for groups whose fitted minimum loss lies below every observed loss."""
    out = []
    for _, r in optima[optima.get("below_observed", pd.Series(False, index=optima.index)).astype(bool)].iterrows():
        label = ", ".join(f"{b}={horizon_label(r[b]) if b == 'D' else format(r[b], 'g')}" for b in by)
        out.append(f"fitted minimum loss {r['loss_opt']:.4f} below every observed loss for {label} "
                   f"({r['n_points']} points fitted): the parabola does not describe the points near the minimum")
    return out


# --- per horizon: B* and the norm there --------------------------------------------------------------------

@public
def norm_per_horizon(optima: pd.DataFrame, horizon: str = "D", batch: str = "B") -> pd.DataFrame:
    """Per horizon: B* (lowest optimal loss over batch sizes), its optimal norm, lr and flags.
    b_at_edge marks B* at the smallest or largest batch with an optimum at that horizon (a censored
    B*: one batch size is always at the edge). A horizon without a finite optimum is skipped with an
    AnalysisWarning; none left raises."""
    what = "norm_per_horizon"
    require_frame(optima, what)
    require_columns(optima, [horizon, batch, "loss_opt", "log2_norm_opt", "lr_opt"], what)
    rows, skipped = [], []
    for h, g in optima.groupby(horizon, sort=True):
        g = g[np.isfinite(g["loss_opt"])]
        if g.empty:
            skipped.append(h)
            continue
        best = g.loc[g["loss_opt"].idxmin()]
        bs = np.sort(g[batch].unique())
        rows.append({horizon: h, "B_opt": best[batch], "loss_opt": best["loss_opt"],
                     "log2_norm_opt": best["log2_norm_opt"], "log2_norm_lo": best.get("log2_norm_lo", np.nan),
                     "log2_norm_hi": best.get("log2_norm_hi", np.nan), "lr_opt": best["lr_opt"],
                     "lr_grid": best.get("lr_grid", np.nan), "n_points": best.get("n_points", np.nan),
                     "n_seeds": best.get("n_seeds", np.nan), "n_batches": len(bs),
                     "norm_ok": bool(best.get("ok", True)), "b_at_edge": best[batch] in (bs[0], bs[-1])})
    if skipped:
        shown = ", ".join(f"{h:g}" if isinstance(h, (int, float)) else str(h) for h in skipped[:4])
        pywarnings.warn(f"{what}: {len(skipped)} horizon(s) without a finite optimum skipped ({horizon}={shown})",
                        AnalysisWarning, stacklevel=3)
    if not rows:
        raise AnalysisError(f"{what}: no horizon has a finite optimum")
    return pd.DataFrame(rows)


@public
def norm_transfer_summary(per: pd.DataFrame, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> dict:
    """Mean, spread and bootstrap interval (over horizons) of the optimal log2 norm at B*, over the
    horizons whose optimum there is interior (norm_ok): an edge optimum is a bound. If every one is at
    the edge, all are used and all_at_edge says so. n_excluded: horizons left out."""
    v = per["log2_norm_opt"].to_numpy(float)
    ok = per["norm_ok"].to_numpy(bool) if "norm_ok" in per else np.ones(len(per), bool)
    finite = np.isfinite(v)
    use = finite & ok if (finite & ok).any() else finite
    v = v[use]
    if v.size == 0:
        raise AnalysisError("norm_transfer_summary: no finite optimal norms")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return {"log2_norm_mean": float(v.mean()), "log2_norm_sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "log2_norm_range": [float(v.min()), float(v.max())], "mean_ci": percentile_interval(means, level),
            "n_horizons": int(v.size), "n_excluded": int(finite.sum() - v.size),
            "all_at_edge": bool(not (finite & ok).any())}


# --- laws ------------------------------------------------------------------------------------------------

def _warn_zero_width(fit: Fit) -> Fit:
    """A bootstrap interval of zero width (every replicate agrees: quantised or censored inputs) is no
    measure of uncertainty; say so."""
    for k, (lo, hi) in fit.ci.items():
        if np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 1e-9 * max(1.0, abs(lo)):
            fit.warnings.append(f"the interval of {k} has zero width ({lo:.3g}): every bootstrap replicate agrees "
                                "(quantised or censored inputs?), it is no measure of uncertainty")
    return fit


@public
def fit_lr_joint(optima: pd.DataFrame, lr: str = "lr_opt", batch: str = "B", horizon: str = "D",
                 only_ok: bool = True, lr_samples: np.ndarray | None = None, **kwargs) -> Fit:
    """log2 eta*(B, D) = alpha log2 B + beta log2 D + gamma by OLS over all (B, D) optima (paper Fig. 3b).
    Edge or concave optima are excluded when only_ok (censored values). lr_samples: (R, len(optima))
    bootstrap eta* (from optimal_norms' bootstrap over seeds), one replicate drawn per bootstrap fit."""
    keep = optima["ok"].to_numpy(bool) if only_ok and "ok" in optima else np.ones(len(optima), bool)
    d = optima[keep]
    if lr_samples is not None:
        kwargs["y_samples"] = np.asarray(lr_samples, float)[:, keep]
    fit = fit_log_linear(d.reset_index(drop=True), lr, [batch, horizon], base=2.0, name="lr_joint", **kwargs)
    fit.details["excluded_optima"] = int(len(optima) - len(d))
    return _warn_zero_width(fit)


@public
def fit_bstar(per: pd.DataFrame, horizon: str = "D", batch: str = "B_opt", **kwargs) -> Fit:
    """B*(D) = a D^b (paper Fig. 7b) over the horizons whose B* is interior: a B* at the smallest or
    largest batch size (b_at_edge) is censored (a bound, not an estimate) and left out, as fit_lr_joint
    leaves out edge optima; details["censored_horizons"] counts them."""
    edge = per["b_at_edge"].to_numpy(bool) if "b_at_edge" in per else np.zeros(len(per), bool)
    d = per[~edge].reset_index(drop=True)
    if edge.any() and len(d) < 3:
        raise AnalysisError(f"fit_bstar: {len(d)} horizon(s) with an interior B* ({int(edge.sum())} censored at the "
                            "edge of the batch grid), need at least 3")
    fit = fit_power_law(d, horizon, batch, name="bstar", **kwargs)
    fit.details["censored_horizons"] = int(edge.sum())
    if edge.any():
        fit.warnings.append(f"{int(edge.sum())} horizon(s) with B* at the edge of the batch grid left out (censored)")
    return _warn_zero_width(fit)


def _crossing(log2_d: np.ndarray, l2: np.ndarray, edge: float) -> tuple[float, int | None]:
    """log2 D at which l2 first reaches `edge`, interpolated between the two evaluations that bracket it,
    and the index of the evaluation at or after it (None if never reached)."""
    hit = np.flatnonzero(l2 >= edge)
    if hit.size == 0:
        return np.nan, None
    i = int(hit[0])
    if i == 0:
        return float(log2_d[0]), 0
    t = (edge - l2[i - 1]) / (l2[i] - l2[i - 1])
    return float(log2_d[i - 1] + t * (log2_d[i] - log2_d[i - 1])), i


@public
def first_band_horizon(table: pd.DataFrame, norm: str = "output_norm", horizon: str = "D", run: str = "run_id",
                       band: tuple[float, float] = (6.8, 7.2), keep: Sequence[str] = ("B", "lr")) -> pd.DataFrame:
    """Per run, the first horizon at which log2(norm) reaches the band's lower edge, interpolated in
    log2 D between the two evaluations that bracket it (evaluations are quantised, typically in
    octaves). status: "crossed"; "never" (D_first NaN); "censored" (D_first NaN): the first evaluation
    (D > 0) is already at or above the lower edge, so the crossing happened earlier (or the run
    overshot the band): a bound, not a value. in_band: the norm at the first evaluation past the edge
    is still below the upper edge (False: it jumped over the band)."""
    require_frame(table, "first_band_horizon")
    require_columns(table, [norm, horizon, run, *keep], "first_band_horizon")
    d = table[(table[horizon].to_numpy(float) > 0) & (table[norm].to_numpy(float) > 0)]
    rows = []
    for rid, g in d.sort_values(horizon).groupby(run, sort=False):
        l2 = np.log2(g[norm].to_numpy(float))
        log2_d, i = _crossing(np.log2(g[horizon].to_numpy(float)), l2, band[0])
        status = "never" if i is None else "censored" if i == 0 else "crossed"
        rows.append({run: rid, **{c: g[c].iloc[0] for c in keep},
                     horizon + "_first": 2.0 ** log2_d if status == "crossed" else np.nan, "status": status,
                     "in_band": bool(i is not None and l2[i] <= band[1])})
    return pd.DataFrame(rows)


@public
def fit_first_band(first: pd.DataFrame, lr: str = "lr", batch: str = "B", horizon: str = "D_first",
                   **kwargs) -> Fit:
    """Free fit log2 eta = c log2 B + beta log2 D_first + gamma (paper Fig. 3a; heuristic c = 1.5, beta = -1)
    over the runs that cross the band's edge (never-reaching and censored runs left out and counted)."""
    d = first[np.isfinite(first[horizon].to_numpy(float))].reset_index(drop=True)
    fit = fit_log_linear(d, lr, [batch, horizon], base=2.0, name="first_band", **kwargs)
    fit.details["heuristic"] = "log2 eta = 1.5 log2 B - log2 D_first + gamma"
    status = first["status"] if "status" in first else pd.Series("crossed", index=first.index)
    fit.details["runs_censored"] = int((status == "censored").sum())
    fit.details["runs_never_reaching_band"] = int(len(first) - len(d) - fit.details["runs_censored"])
    return _warn_zero_width(fit)

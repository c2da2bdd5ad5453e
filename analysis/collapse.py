"""Curve collapse ("supercollapse", Qiu et al. 2025, "Scaling Collapse Reveals Universal Dynamics in
Compute-Optimally Trained Neural Networks", arXiv 2507.02119): a check that a sweep's hyperparameters
were scaled consistently.

Each run's loss curve is normalised by its final compute and its final loss above the irreducible loss:

    x = C(t) / C(T) (= t / T for one model)     l(x) = (L(x T) - L0) / (L(T) - L0)

When the runs of different sizes were trained compute-optimally with consistently scaled
hyperparameters, the normalised curves fall on one universal curve; Qiu et al. find that the spread
across model sizes Delta(x) then drops below the seed-to-seed spread sigma(x) ("supercollapse"), and
that a mis-scaled hyperparameter (e.g. a learning rate not transferred) breaks it.

Here, on a common grid of x:
- l_r(x) per run by linear interpolation of its logged curve;
- per group (a configuration, e.g. one width) the seed-mean curve M_g(x) and seed std s_g(x);
- Delta(x) = std over groups of M_g(x); sigma(x) = pooled seed std of single curves (sqrt of the mean
  s_g^2 over the groups with >= 2 seeds); the seed-noise floor of Delta is sigma(x) sqrt(mean_g 1/n_g)
  (what Delta would be if the groups differed only by seed noise).
- collapse_ratio = median_x Delta/sigma (Qiu et al.'s comparison: < 1 is supercollapse) and
  excess_ratio = median_x Delta / floor (about 1 when the groups collapse up to seed noise; well above 1
  when the curves' shapes differ, i.e. a hyperparameter was not scaled consistently).
- L0: a float, or "fit": the seed-mean final losses per group fitted as L0 + a C_T^-b (C_T = 6 N D_T when a
  parameter-count column is given, else D_T), by variable projection over b (a grid) with (L0, a) linear.
Intervals: percentile bootstrap over seeds within each group (L0 refitted on every replicate; the
within-group variance of a replicate is rescaled by n/(n-1) for its duplicated seeds). The interval of
Delta leans high: resampling adds seed noise to every group's mean curve.
Simplifications: the final point of each run is its own horizon (runs are assumed to end at their
compute-optimal budget, as in the paper's setup); the final loss is the mean over the last
`final_points` logged points (1 by default, the paper's choice).
"""

from __future__ import annotations

import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.validate import as_list, group_label, is_number, numeric, public, require_columns, require_frame


@public
def fit_irreducible(final_loss, compute) -> tuple[float, float, float]:
    """(L0, a, b) of L = L0 + a C^-b by least squares: exact in (L0, a) for each b on a grid, then refined."""
    L, C = np.asarray(final_loss, float), np.asarray(compute, float)
    if L.size < 3 or np.unique(C).size < 3:
        raise AnalysisError(f"fit_irreducible: {np.unique(C).size} distinct compute value(s), need at least 3")
    lc = np.log(C / np.exp(np.mean(np.log(C))))

    def solve(bs):
        Z = np.exp(-bs[:, None] * lc[None, :])  # (G, n)
        zc = Z - Z.mean(1, keepdims=True)
        a = (zc @ (L - L.mean())) / np.sum(zc**2, 1)
        L0 = L.mean() - a * Z.mean(1)
        sse = np.sum((L[None] - L0[:, None] - a[:, None] * Z) ** 2, 1)
        return L0, a, np.where(a > 0, sse, np.inf)

    grid = np.geomspace(0.01, 3.0, 300)
    L0, a, sse = solve(grid)
    j = int(np.argmin(sse))
    fine = np.linspace(grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)], 201)
    L0f, af, ssef = solve(fine)
    i = int(np.argmin(ssef))
    if not np.isfinite(ssef[i]):
        raise AnalysisError("fit_irreducible: the final loss does not fall with compute")
    b = fine[i]
    return float(L0f[i]), float(af[i] * np.exp(b * np.mean(np.log(C)))), float(b)


def _normalised(runs_data: list[dict], L0: float, grid: np.ndarray) -> np.ndarray:
    out = np.full((len(runs_data), len(grid)), np.nan)
    for i, r in enumerate(runs_data):
        gap = r["final"] - L0
        if gap > 0:
            out[i] = (np.interp(grid, r["x"], r["loss"], left=np.nan) - L0) / gap
    return out


def _spread(ell: np.ndarray, group_idx: np.ndarray, n_groups: int, resampled: bool = False) -> dict[str, np.ndarray]:
    """resampled: the rows were drawn with replacement; duplicates shrink the sample variance by (n-1)/n on
    average, so it is scaled back by n/(n-1)."""
    means, var_within, inv_n = [], [], []
    for g in range(n_groups):
        rows = ell[group_idx == g]
        means.append(np.nanmean(rows, 0) if len(rows) else np.full(ell.shape[1], np.nan))
        inv_n.append(1.0 / max(len(rows), 1))
        if len(rows) >= 2:
            var_within.append(np.nanvar(rows, 0, ddof=1) * (len(rows) / (len(rows) - 1) if resampled else 1.0))
    M = np.array(means)
    delta = np.nanstd(M, 0, ddof=1) if n_groups >= 2 else np.full(ell.shape[1], np.nan)
    sigma = np.sqrt(np.nanmean(np.array(var_within), 0)) if var_within else np.full(ell.shape[1], np.nan)
    floor = sigma * np.sqrt(np.mean(inv_n))
    return {"M": M, "delta": delta, "sigma": sigma, "floor": floor}


def _median_ratio(num: np.ndarray, den: np.ndarray) -> float:
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return float(np.median(num[ok] / den[ok])) if ok.any() else float("nan")


@public
def curve_collapse(curves: pd.DataFrame, runs: pd.DataFrame | None = None, group: str | Sequence[str] = "model.width",
                   seed_col: str | None = "run.seed", *, x: str = "tokens", loss: str = "train_loss",
                   n: str | None = "n_params", irreducible: float | str = "fit", x_min: float = 0.1,
                   x_max: float = 0.95, n_grid: int = 50, final_points: int = 1, consistent_below: float = 2.0,
                   n_boot: int = 200, level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, Fit]:
    """Normalised curves and their spread across groups relative to the seed-to-seed spread.

    curves: run_id, x and loss columns (group/seed/n columns are taken from `runs` when given, merged on
    run_id). Returns (table, fit): table has x, Delta, sigma, floor and one column per group (its
    seed-mean normalised curve, named by the group label); fit has params collapse_ratio, excess_ratio,
    L0 (and a, b when fitted), n_groups, with bootstrap intervals over seeds; details["consistent"] is
    excess_ratio < consistent_below.
    """
    group = as_list(group)
    what = "curve_collapse"
    require_frame(curves, what)
    require_columns(curves, ["run_id", x, loss], what)
    data = curves
    meta_cols = [*group, *( [seed_col] if seed_col else []), *([n] if n else [])]
    if runs is not None:
        require_columns(runs, ["run_id", *group], what + " (runs)")
        keep = ["run_id"] + [c for c in meta_cols if c in runs.columns]
        data = curves.drop(columns=[c for c in keep[1:] if c in curves.columns]).assign(
            run_id=curves["run_id"].astype(str)).merge(runs[keep].assign(run_id=runs["run_id"].astype(str)),
                                                      on="run_id", how="inner")
    require_columns(data, group, what)
    if seed_col and seed_col not in data.columns:
        seed_col = None
    if n and n not in data.columns:
        n = None
    warnings: list[str] = []
    runs_data, labels = [], []
    no_key = []
    for rid, g in data.groupby("run_id", sort=True, observed=True):
        xs, ys = numeric(g, x, what), numeric(g, loss, what)
        ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
        if ok.sum() < 3:
            warnings.append(f"run {rid}: {int(ok.sum())} finite point(s), skipped")
            continue
        order = np.argsort(xs[ok])
        xs, ys = xs[ok][order], ys[ok][order]
        key = tuple(g[c].iloc[0] for c in group)
        if any(pd.isna(v) for v in key):
            no_key.append(str(rid))
            continue
        runs_data.append({"run": str(rid), "key": key, "x": xs / xs[-1], "loss": ys, "x_T": xs[-1],
                          "final": float(np.mean(ys[-final_points:])),
                          "n": float(g[n].iloc[0]) if n else np.nan,
                          "seed": g[seed_col].iloc[0] if seed_col else 0})
        labels.append(key)
    if no_key:
        pywarnings.warn(f"{what}: {len(no_key)} run(s) with no value in {', '.join(map(repr, group))} dropped (a NaN "
                        f"group key; runs missing from the runs table?): {', '.join(no_key[:5])}",
                        AnalysisWarning, stacklevel=2)
    keys = sorted(set(labels), key=lambda k: tuple((0, float(v)) if is_number(v) else (1, str(v)) for v in k))
    if len(keys) < 2:
        raise AnalysisError(f"{what}: {len(keys)} group(s) of {', '.join(group)} with usable curves; need at least 2")
    gi = np.array([keys.index(k) for k in labels])
    n_seeds = np.bincount(gi, minlength=len(keys))
    if n_seeds.max() < 2:
        warnings.append("one seed per group: no seed-to-seed spread to compare with (collapse ratios are NaN)")
    elif n_seeds.min() < 2:
        warnings.append(f"{int((n_seeds < 2).sum())} group(s) with one seed: sigma comes from the others")
    grid = np.linspace(x_min, x_max, n_grid)

    def estimate(idx: np.ndarray, resampled: bool = False) -> dict:
        sub = [runs_data[i] for i in idx]
        sgi = gi[idx]
        if isinstance(irreducible, str):
            finals = np.array([np.mean([r["final"] for r, g in zip(sub, sgi) if g == j]) for j in range(len(keys))])
            comp = np.array([np.mean([(6 * r["n"] * r["x_T"]) if n else r["x_T"] for r, g in zip(sub, sgi) if g == j])
                             for j in range(len(keys))])
            L0, a, b = fit_irreducible(finals, comp)
            if not L0 < finals.min():
                raise AnalysisError("fitted irreducible loss is not below every final loss")
        else:
            L0, a, b = float(irreducible), np.nan, np.nan
        ell = _normalised(sub, L0, grid)
        sp = _spread(ell, sgi, len(keys), resampled)
        return {"L0": L0, "a": a, "b": b, **sp,
                "collapse_ratio": _median_ratio(sp["delta"], sp["sigma"]),
                "excess_ratio": _median_ratio(sp["delta"], sp["floor"])}

    all_idx = np.arange(len(runs_data))
    if isinstance(irreducible, str):
        if irreducible != "fit":
            raise AnalysisError(f"{what}: irreducible={irreducible!r} must be a number or 'fit'")
        try:
            est = estimate(all_idx)
        except AnalysisError as e:
            warnings.append(f"irreducible loss not fitted ({e}); L0 = 0 used")
            irreducible = 0.0
            est = estimate(all_idx)
    else:
        est = estimate(all_idx)
    params = {"collapse_ratio": est["collapse_ratio"], "excess_ratio": est["excess_ratio"], "L0": est["L0"]}
    if isinstance(irreducible, str):
        params.update(a=est["a"], b=est["b"])
    table = pd.DataFrame({"x": grid, "delta": est["delta"], "sigma": est["sigma"], "floor": est["floor"]})
    for j, k in enumerate(keys):
        table[group_label(group, k)] = est["M"][j]
    consistent = bool(np.isfinite(est["excess_ratio"]) and est["excess_ratio"] < consistent_below)
    if np.isfinite(est["excess_ratio"]) and not consistent:
        warnings.append(f"the normalised curves spread {est['excess_ratio']:.1f}x more than seed noise explains: "
                        "the sweep's hyperparameters may not be scaled consistently across "
                        f"{', '.join(group)}")
    fit = Fit("curve_collapse", params, n=len(runs_data), warnings=warnings,
              details={"form": "l(x) = (L(x T) - L0) / (L(T) - L0), x = C / C_T (Qiu et al. 2025)",
                       "groups": [group_label(group, k) for k in keys], "seeds_per_group": n_seeds.tolist(),
                       "grid": [x_min, x_max, n_grid], "consistent": consistent,
                       "consistent_below": consistent_below, "supercollapse": bool(est["collapse_ratio"] < 1),
                       "irreducible": "fit L0 + a C_T^-b" if isinstance(irreducible, str) else irreducible,
                       "compute": "6 N D_T" if n else f"final {x}",
                       "columns": {"x": x, "loss": loss, "group": group, "seed": seed_col, "N": n}})
    if n_boot > 0 and n_seeds.max() >= 2:
        rng = np.random.default_rng(seed)
        members = [np.flatnonzero(gi == j) for j in range(len(keys))]
        reps = []
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(m, len(m)) for m in members])
            try:
                e = estimate(idx, resampled=True)
                reps.append({k: e[k] for k in params})
            except AnalysisError:
                reps.append({k: np.nan for k in params})
        fit.samples = pd.DataFrame(reps)
        fit.ci = {k: percentile_interval(fit.samples[k].to_numpy(), level) for k in params}
        fit.se = {k: float(np.nanstd(fit.samples[k].to_numpy(float), ddof=1)) for k in params}
        fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level,
                                    "method": "resample seeds within each group"}
    return table, fit


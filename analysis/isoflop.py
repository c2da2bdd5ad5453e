"""Chinchilla Approaches 2 (IsoFLOP parabolas) and 1 (the compute frontier of training curves).

Approach 2 (Hoffmann et al. 2022, section 3.2): per compute budget C, fit loss = a u^2 + b u + c with
u = ln N over the runs on that budget; the vertex gives N*(C) and D* = C / 6N*; then N* ~ C^a by a
power law. Checks: convex fit (a > 0), vertex strictly inside the
sampled range, at least two points on each side; vertex interval by bootstrap over the budget's runs.
Known bias: along an IsoFLOP the valley is symmetric in ln N only when alpha = beta, so the vertex is
misplaced by an amount that grows with the window width (Open-Athena reports 4-8 % intercept bias
on noise-free grids); every Approach 2 fit carries that warning. Prefer Approach 3 on the same rows.

Approach 1 (section 3.1): for each compute value on a log grid, the run with the lowest loss at that
compute (interpolated along its training curve, C = 6 N D) gives N*(C).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.grid import snap_relative
from analysis.powerlaw import fit_power_law
from analysis.validate import positive, require_columns, require_frame

BIAS_WARNING = ("Approach 2 parabola vertices are biased when alpha != beta (asymmetric IsoFLOP valleys); the bias "
                "grows with the sampled window and off-centre sampling. Cross-check with Approach 3 (fit_chinchilla).")


def _vertex(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    a, b, c = np.polyfit(u, y, 2)
    if a <= 0:
        return np.nan, np.nan, a
    return -b / (2 * a), c - b * b / (4 * a), a


def isoflop_optima(df: pd.DataFrame, n: str = "N", loss: str = "loss", compute: str = "C", *,
                   snap_rtol: float = 1e-2, n_boot: int = 200, level: float = 0.95, seed: int = 0,
                   return_samples: bool = False):
    """Vertex of the IsoFLOP parabola per compute budget. Budgets are snapped (relative tolerance
    snap_rtol) before grouping. Columns: C, N_opt, D_opt, loss_opt, N_lo, N_hi, curvature, n_points,
    n_left, n_right, convex, interior, ok."""
    what = "isoflop_optima"
    require_frame(df, what)
    require_columns(df, [n, loss, compute], what)
    N, L, C = positive(df, n, what), positive(df, loss, what), positive(df, compute, what)
    Cs = snap_relative(C, snap_rtol)
    rng = np.random.default_rng(seed)
    rows, samples = [], []
    for c in np.unique(Cs):
        m = Cs == c
        u, y = np.log(N[m]), L[m]
        row = {"C": c, "n_points": int(m.sum())}
        samp = np.full(n_boot, np.nan)
        if m.sum() < 3:
            row.update(N_opt=np.nan, D_opt=np.nan, loss_opt=np.nan, N_lo=np.nan, N_hi=np.nan, curvature=np.nan,
                       n_left=0, n_right=0, convex=False, interior=False, ok=False)
            rows.append(row)
            samples.append(samp)
            continue
        u0, y0, a = _vertex(u, y)
        interior = bool(np.isfinite(u0) and u.min() < u0 < u.max())
        n_left, n_right = (int(np.sum(u < u0)), int(np.sum(u > u0))) if np.isfinite(u0) else (0, 0)
        for r in range(n_boot):
            idx = rng.integers(0, len(u), len(u))
            if len(np.unique(u[idx])) >= 3:
                samp[r] = _vertex(u[idx], y[idx])[0]
        fin = samp[np.isfinite(samp)]
        lo, hi = np.quantile(fin, [(1 - level) / 2, (1 + level) / 2]) if fin.size >= 10 else (np.nan, np.nan)
        row.update(N_opt=float(np.exp(u0)), D_opt=float(c / (6 * np.exp(u0))), loss_opt=float(y0),
                   N_lo=float(np.exp(lo)), N_hi=float(np.exp(hi)), curvature=float(a), n_left=n_left,
                   n_right=n_right, convex=bool(a > 0), interior=interior,
                   ok=bool(a > 0 and interior and n_left >= 2 and n_right >= 2))
        rows.append(row)
        samples.append(np.exp(samp))
    table = pd.DataFrame(rows)
    if return_samples:
        return table, np.column_stack(samples)
    return table


def fit_approach2(df: pd.DataFrame, n: str = "N", loss: str = "loss", compute: str = "C", *, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, Fit]:
    """IsoFLOP vertices, then N_opt = k_N C^a and D_opt = k_D C^b over the budgets whose vertex passed
    the checks. Returns (vertices, Fit with N_coef, N_exponent, D_coef, D_exponent)."""
    table, samp = isoflop_optima(df, n, loss, compute, n_boot=max(n_boot // 5, 50), seed=seed, return_samples=True)
    good = table["ok"].to_numpy()
    if good.sum() < 2:
        raise AnalysisError(f"fit_approach2: only {int(good.sum())} budget(s) have a convex, interior vertex with two "
                            "points on each side; need at least 2")
    t = table[good].reset_index(drop=True)
    fn = fit_power_law(t, "C", "N_opt", n_boot=n_boot, level=level, seed=seed, y_samples=samp[:, good])
    d_samp = t["C"].to_numpy()[None] / (6 * samp[:, good])
    fd = fit_power_law(t, "C", "D_opt", n_boot=n_boot, level=level, seed=seed, y_samples=d_samp)
    warnings = [BIAS_WARNING] + [f"budget C={r.C:.3g} excluded: " + ", ".join(
        w for w, bad in (("concave", not r.convex), ("vertex outside the sampled N", not r.interior),
                         ("fewer than 2 points on a side", min(r.n_left, r.n_right) < 2)) if bad)
        for r in table[~good].itertuples()]
    fit = Fit("approach2_isoflop", {"N_coef": fn["a"], "N_exponent": fn["b"], "D_coef": fd["a"], "D_exponent": fd["b"]},
              ci={"N_coef": fn.ci.get("a"), "N_exponent": fn.ci.get("b"), "D_coef": fd.ci.get("a"),
                  "D_exponent": fd.ci.get("b")},
              se={"N_exponent": fn.se.get("b"), "D_exponent": fd.se.get("b")}, r2=fn.r2, n=int(good.sum()),
              warnings=warnings + fn.warnings,
              details={"form": "N_opt = N_coef * C^N_exponent, D_opt = D_coef * C^D_exponent",
                       "vertex": "parabola of loss in ln N per budget", "n_budgets": len(table)})
    return table, fit


def frontier(curves: pd.DataFrame, n: str = "N", tokens: str = "tokens", loss: str = "loss", run: str = "run_id", *,
             n_grid: int = 30) -> pd.DataFrame:
    """Approach 1: lowest loss over runs at each compute C = 6 N D on a log grid, interpolating each
    run's curve linearly in log C. Columns: C, loss, N_opt, D_opt, run, at_edge (the best run is the
    smallest or largest model, so the true optimum may lie outside)."""
    what = "frontier"
    require_frame(curves, what)
    require_columns(curves, [n, tokens, loss, run], what)
    df = curves[[run, n, tokens, loss]].dropna()
    df = df[(df[tokens] > 0) & (df[n] > 0) & np.isfinite(df[loss])]
    if df.empty:
        raise AnalysisError(f"{what}: no rows with positive {n!r}, {tokens!r} and a finite {loss!r}")
    logc = np.log(6 * df[n].to_numpy(float) * df[tokens].to_numpy(float))
    grid = np.linspace(logc.min(), logc.max(), n_grid)
    sizes = np.sort(df[n].unique())
    best = np.full(n_grid, np.inf)
    who = np.full(n_grid, None, dtype=object)
    size = np.full(n_grid, np.nan)
    for rid, g in df.assign(_lc=logc).groupby(run, observed=True):
        g = g.sort_values("_lc")
        lc, yl = g["_lc"].to_numpy(), g[loss].to_numpy(float)
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        if not inside.any():
            continue
        vals = np.interp(grid[inside], lc, yl)
        better = vals < best[inside]
        idx = np.flatnonzero(inside)[better]
        best[idx], who[idx], size[idx] = vals[better], rid, g[n].iloc[0]
    C = np.exp(grid)
    out = pd.DataFrame({"C": C, "loss": best, "N_opt": size, "D_opt": C / (6 * size), "run": who})
    out["at_edge"] = out["N_opt"].isin([sizes[0], sizes[-1]])
    return out[np.isfinite(out["loss"])].reset_index(drop=True)


def fit_approach1(curves: pd.DataFrame, n: str = "N", tokens: str = "tokens", loss: str = "loss",
                  run: str = "run_id", *, n_grid: int = 30, n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0) -> tuple[pd.DataFrame, Fit]:
    """Approach 1: the frontier, then N_opt = k C^a over the compute values whose best run is neither
    the smallest nor the largest model (at the edge the true optimum may lie outside the sizes tried)."""
    table = frontier(curves, n, tokens, loss, run, n_grid=n_grid)
    inner = table[~table["at_edge"]].reset_index(drop=True)
    if inner["N_opt"].nunique() < 2:
        raise AnalysisError(f"fit_approach1: {inner['N_opt'].nunique()} distinct interior model size(s) on the "
                            "frontier; need at least 2 (add sizes on both sides of the optimum)")
    fit = fit_power_law(inner, "C", "N_opt", n_boot=n_boot, level=level, seed=seed, name="approach1_frontier")
    fit.details["edge_points_excluded"] = int(table["at_edge"].sum())
    fit.warnings.append("Approach 1 frontier points are quantised to the model sizes trained: few sizes give a "
                        "step function and a loose exponent")
    return table, fit

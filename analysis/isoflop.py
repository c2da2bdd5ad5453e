"""Chinchilla Approaches 2 (IsoFLOP parabolas) and 1 (the compute frontier of training curves).

Approach 2 (Hoffmann et al. 2022, section 3.2): per compute budget C, fit loss = a u^2 + b u + c with
u = ln N over the runs on that budget; the vertex gives N*(C) and D* = C / 6N*; then N* ~ C^a by a
power law. Checks: convex fit (a > 0), vertex strictly inside the
sampled range, at least two points on each side, and at most 10 % of the bootstrap parabolas without a
vertex inside the sampled range (a nearly flat valley, whose interval reaches far outside the sizes
tried); vertex interval by bootstrap over the budget's runs. Failing budgets stay out of the law, named
in its warnings.
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
from analysis.validate import positive, public, require_columns, require_frame

BIAS_WARNING = ("Approach 2 parabola vertices are biased when alpha != beta (asymmetric IsoFLOP valleys); the bias "
                "grows with the sampled window and off-centre sampling. Cross-check with Approach 3 (fit_chinchilla).")


def _vertex(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    a, b, c = np.polyfit(u, y, 2)
    if a <= 0:
        return np.nan, np.nan, a
    return -b / (2 * a), c - b * b / (4 * a), a


@public
def isoflop_optima(df: pd.DataFrame, n: str = "N", loss: str = "loss", compute: str = "C", *,
                   snap_rtol: float = 1e-2, n_boot: int = 200, level: float = 0.95, seed: int = 0,
                   max_outside: float = 0.1, max_decades: float = 1.0, return_samples: bool = False):
    """Vertex of the IsoFLOP parabola per compute budget. Budgets are snapped (relative tolerance
    snap_rtol) before grouping. Columns: C, N_opt, D_opt, loss_opt, N_lo, N_hi, N_min, N_max (the
    sampled range), interval_decades (log10 N_hi/N_lo), curvature, n_points, n_left, n_right, convex,
    interior, boot_outside (share of bootstrap replicates whose parabola has no vertex inside
    [N_min, N_max]: concave, or its vertex outside), stable (boot_outside <= max_outside), wide
    (interval_decades > max_decades), ok (convex, interior, two points on each side and stable).
    With return_samples, also the (n_boot, n_budgets) array of replicate vertices (unclipped; NaN
    where a replicate's parabola opens downward)."""
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
        row = {"C": c, "n_points": int(m.sum()), "N_min": float(N[m].min()), "N_max": float(N[m].max())}
        samp = np.full(n_boot, np.nan)
        if m.sum() < 3 or len(np.unique(u)) < 3:
            row.update(N_opt=np.nan, D_opt=np.nan, loss_opt=np.nan, N_lo=np.nan, N_hi=np.nan, interval_decades=np.nan,
                       curvature=np.nan, n_left=0, n_right=0, convex=False, interior=False, boot_outside=np.nan,
                       stable=False, wide=False, ok=False)
            rows.append(row)
            samples.append(samp)
            continue
        u0, y0, a = _vertex(u, y)
        interior = bool(np.isfinite(u0) and u.min() < u0 < u.max())
        n_left, n_right = (int(np.sum(u < u0)), int(np.sum(u > u0))) if np.isfinite(u0) else (0, 0)
        tried = 0
        for r in range(n_boot):
            idx = rng.integers(0, len(u), len(u))
            if len(np.unique(u[idx])) >= 3:
                tried += 1
                samp[r] = _vertex(u[idx], y[idx])[0]
        fin = samp[np.isfinite(samp)]
        inside = np.sum((fin > u.min()) & (fin < u.max()))
        outside = 1.0 - inside / tried if tried else np.nan
        lo, hi = np.quantile(fin, [(1 - level) / 2, (1 + level) / 2]) if fin.size >= 10 else (np.nan, np.nan)
        stable = bool(np.isfinite(outside) and outside <= max_outside)
        decades = float((hi - lo) / np.log(10)) if np.isfinite(lo) else np.nan
        with np.errstate(over="ignore"):
            row.update(N_opt=float(np.exp(u0)), D_opt=float(c / (6 * np.exp(u0))), loss_opt=float(y0),
                       N_lo=float(np.exp(lo)), N_hi=float(np.exp(hi)), interval_decades=decades, curvature=float(a),
                       n_left=n_left, n_right=n_right, convex=bool(a > 0), interior=interior,
                       boot_outside=float(outside), stable=stable,
                       wide=bool(np.isfinite(decades) and decades > max_decades),
                       ok=bool(a > 0 and interior and n_left >= 2 and n_right >= 2 and stable))
            samples.append(np.exp(samp))
        rows.append(row)
    table = pd.DataFrame(rows)
    if return_samples:
        return table, np.column_stack(samples)
    return table


def _law_warnings(fn: Fit, C: np.ndarray, level: float, max_decades: float, max_width: float) -> list[str]:
    """Plain warnings when the N_opt = a C^b law's intervals are too wide to determine it."""
    out = []
    elo, ehi = fn.ci.get("b", (np.nan, np.nan))
    clo, chi = fn.ci.get("a", (np.nan, np.nan))
    with np.errstate(all="ignore"):
        coef_decades = float(np.log10(chi / clo)) if np.isfinite(clo) and clo > 0 else np.inf
        a, b = fn.samples["a"].to_numpy(), fn.samples["b"].to_numpy()
        pred = np.log10(a)[:, None] + b[:, None] * np.log10(C)[None]
    pred = np.where(np.isfinite(pred), pred, np.nan)
    span = np.full(len(C), np.nan)
    if np.isfinite(pred).sum() >= 10:
        lo, hi = np.nanquantile(pred, [(1 - level) / 2, (1 + level) / 2], axis=0)
        span = hi - lo
    if not np.isfinite(elo) or ehi - elo > max_width or coef_decades > 10:
        out.append(f"the law is not determined by these budgets: N_exponent {level:.0%} interval "
                   f"[{elo:.3g}, {ehi:.3g}], N_coef [{clo:.3g}, {chi:.3g}] ({coef_decades:.0f} decades); "
                   "D_exponent and D_coef likewise")
    if np.isfinite(span).any() and np.nanmax(span) > max_decades:
        j = int(np.nanargmax(span))
        out.append(f"the N_opt law's {level:.0%} interval spans {span[j]:.1f} decades of N at the sampled budget "
                   f"C={C[j]:.3g}")
    return out


def _budget_problems(r) -> list[str]:
    out = [w for w, bad in (("concave", not r.convex), ("vertex outside the sampled N", not r.interior),
                            ("fewer than 2 points on a side", min(r.n_left, r.n_right) < 2)) if bad]
    if r.convex and r.interior and not r.stable and np.isfinite(r.boot_outside):
        out.append(f"{r.boot_outside:.0%} of bootstrap parabolas have no vertex inside the sampled N "
                   f"[{r.N_min:.3g}, {r.N_max:.3g}] (nearly flat); its interval is [{r.N_lo:.3g}, {r.N_hi:.3g}]")
    return out


@public
def fit_approach2(df: pd.DataFrame, n: str = "N", loss: str = "loss", compute: str = "C", *, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0, max_outside: float = 0.1, exclude_unstable: bool = True,
                  max_decades: float = 1.0, max_exponent_width: float = 0.5) -> tuple[pd.DataFrame, Fit]:
    """IsoFLOP vertices, then N_opt = k_N C^a and D_opt = k_D C^b over the budgets whose vertex passed
    the checks. Returns (vertices, Fit with N_coef, N_exponent, D_coef, D_exponent; Fit.samples holds
    the bootstrap replicates of the four).

    A budget whose vertex is concave, outside the sampled N, has fewer than two points on a side, or
    whose bootstrap parabolas put more than max_outside of their vertices outside the sampled N (a
    nearly flat valley: its interval can reach 1e40 parameters) is kept out of the law, with a warning
    naming it; exclude_unstable=False keeps the last kind in (warned). Replicate vertices of the
    budgets kept are clipped to their sampled N range before they enter the law's bootstrap. A law
    whose interval is too wide to mean anything says so in its warnings: N_exponent's interval wider
    than max_exponent_width, N_coef's spanning more than 10 decades, or N_opt at a sampled budget
    spanning more than max_decades."""
    table, samp = isoflop_optima(df, n, loss, compute, n_boot=max(n_boot // 5, 50), seed=seed,
                                 max_outside=max_outside, max_decades=max_decades, return_samples=True)
    unstable_only = table["convex"] & table["interior"] & (np.minimum(table["n_left"], table["n_right"]) >= 2) & \
        ~table["stable"]
    good = table["ok"].to_numpy() | (unstable_only.to_numpy() & (not exclude_unstable))
    if good.sum() < 3:
        raise AnalysisError(f"fit_approach2: only {int(good.sum())} budget(s) have a convex, interior, stable vertex "
                            "with two points on each side; need at least 3" + "".join(
                                f"; budget C={r.C:.3g}: " + ", ".join(_budget_problems(r))
                                for r in table[~good].itertuples() if _budget_problems(r)))
    t = table[good].reset_index(drop=True)
    n_samp = np.clip(samp[:, good], t["N_min"].to_numpy()[None], t["N_max"].to_numpy()[None])
    fn = fit_power_law(t, "C", "N_opt", n_boot=n_boot, level=level, seed=seed, y_samples=n_samp)
    d_samp = t["C"].to_numpy()[None] / (6 * n_samp)
    fd = fit_power_law(t, "C", "D_opt", n_boot=n_boot, level=level, seed=seed, y_samples=d_samp)
    warnings = [BIAS_WARNING]
    for r in table[~good].itertuples():
        warnings.append(f"budget C={r.C:.3g} excluded: " + (", ".join(_budget_problems(r)) or "too few points"))
    for r in table[good & ~table["stable"].to_numpy()].itertuples():
        why = (_budget_problems(r) or ["its bootstrap gave no vertex at all"])[-1]
        warnings.append(f"budget C={r.C:.3g} kept (exclude_unstable=False) although {why}")
    for r in t[t["wide"]].itertuples():
        warnings.append(f"budget C={r.C:.3g}: the vertex interval [{r.N_lo:.3g}, {r.N_hi:.3g}] spans "
                        f"{r.interval_decades:.1f} decades of N")
    samples = None
    if fn.samples is not None:
        samples = pd.DataFrame({"N_coef": fn.samples["a"], "N_exponent": fn.samples["b"], "D_coef": fd.samples["a"],
                                "D_exponent": fd.samples["b"]})
        warnings += _law_warnings(fn, t["C"].to_numpy(), level, max_decades, max_exponent_width)
    fit = Fit("approach2_isoflop", {"N_coef": fn["a"], "N_exponent": fn["b"], "D_coef": fd["a"], "D_exponent": fd["b"]},
              ci={"N_coef": fn.ci.get("a"), "N_exponent": fn.ci.get("b"), "D_coef": fd.ci.get("a"),
                  "D_exponent": fd.ci.get("b")},
              se={"N_exponent": fn.se.get("b"), "D_exponent": fd.se.get("b")}, r2=fn.r2, n=int(good.sum()),
              warnings=warnings + fn.warnings, samples=samples,
              details={"form": "N_opt = N_coef * C^N_exponent, D_opt = D_coef * C^D_exponent",
                       "vertex": "parabola of loss in ln N per budget", "n_budgets": len(table),
                       "budgets_used": [float(c) for c in t["C"]],
                       "budgets_excluded": [float(c) for c in table.loc[~good, "C"]],
                       "max_outside": max_outside, "exclude_unstable": exclude_unstable,
                       "replicates": "vertex replicates clipped to each budget's sampled N range"})
    return table, fit


@public
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


@public
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

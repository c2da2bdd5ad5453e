"""Optimizer speedup relative to a baseline ("Fantastic Pretraining Optimizers", Wen et al. 2025,
arXiv 2509.02046).

Per model size, fit the baseline's final loss against the data multiple k as L(k) = alpha k^-B + beta.
For another optimizer with loss L_o at multiple k, k_eff = ((L_o - beta) / alpha)^(-1/B) is the data the
baseline would need; speedup = k_eff / k. L_o <= beta makes k_eff infinite: the speedup is reported as
inf ("beyond the baseline's asymptote"). With 4 points and 3 parameters the baseline curve has one
residual degree of freedom, so intervals come from resampling seeds within each k when there are
repeats, else from a parametric bootstrap on the residual scale, and carry a warning.

Both sides vary in the speedup's interval: the baseline curve's replicates and the compared optimizer's
loss, resampled over its seeds when it has repeats, else drawn from N(L_o, loss_noise^2). loss_noise is
the run-to-run noise floor of one loss (e.g. the sd of seed-to-seed scatter, or the rounding of a
published table: +-0.0005 is an sd of 0.0003); it also floors the baseline's parametric bootstrap.
Without seeds the interval is conditional (on loss_noise, or on the loss being exact when it is not
given), and says so in the warnings.
"""

from __future__ import annotations

import warnings as pywarnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.validate import (as_list, iter_groups, numeric, pooled_groups, positive, public, require_columns,
                               require_frame)

_EXPONENTS = np.geomspace(0.01, 4.0, 400)


def _fit_saturating(k: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least squares of y = alpha k^-B + beta for each row of Y (R, n): exact linear solve for (alpha,
    beta) at every B on a grid (variable projection), then a finer grid around the best B.
    Returns (R, 3) = (alpha, B, beta)."""
    Y = np.atleast_2d(Y)

    def solve(exps, Y):
        Z = k[None, :] ** -exps[:, None]  # (G, n)
        zm, ym = Z.mean(1), Y.mean(1)
        zc = Z - zm[:, None]
        var = np.sum(zc**2, 1)
        alpha = np.einsum("gn,rn->rg", zc, Y - ym[:, None]) / var
        beta = ym[:, None] - alpha * zm[None, :]
        sse = np.sum((Y[:, None, :] - alpha[..., None] * Z[None] - beta[..., None]) ** 2, -1)
        sse = np.where(alpha > 0, sse, np.inf)  # loss must fall with more data
        return alpha, beta, sse

    alpha, beta, sse = solve(_EXPONENTS, Y)
    j = np.argmin(sse, 1)
    out = np.empty((Y.shape[0], 3))
    for r in range(Y.shape[0]):
        lo, hi = _EXPONENTS[max(j[r] - 1, 0)], _EXPONENTS[min(j[r] + 1, len(_EXPONENTS) - 1)]
        fine = np.linspace(lo, hi, 101)
        a2, b2, s2 = solve(fine, Y[r:r + 1])
        i = np.argmin(s2[0])
        out[r] = (a2[0, i], fine[i], b2[0, i]) if np.isfinite(s2[0, i]) else (np.nan, np.nan, np.nan)
    return out


@public
def fit_data_scaling(df: pd.DataFrame, k: str = "k", loss: str = "loss", *, seed_col: str | None = None,
                     loss_noise: float | None = None, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     check_pooled: bool = True) -> Fit:
    """L(k) = alpha k^-B + beta for one optimizer and model size (rows may repeat k over seeds).

    Intervals: resampling rows within each k when k repeats, else a parametric bootstrap with the
    residual sd, floored at loss_noise. With check_pooled, rows that repeat k at different loss with
    no seed_col are warned about (several groups pooled?), naming the columns that would separate
    them (optimizer_speedup makes that check over each whole comparison instead)."""
    what = "fit_data_scaling"
    require_frame(df, what)
    require_columns(df, [k, loss, seed_col], what)
    kk, y = positive(df, k, what), positive(df, loss, what)
    if len(np.unique(kk)) < 3:
        raise AnalysisError(f"{what}: column {k!r} has {len(np.unique(kk))} distinct value(s); need at least 3")
    est = _fit_saturating(kk, y[None])[0]
    resid = y - (est[0] * kk ** -est[1] + est[2])
    dof = len(y) - 3
    warnings = [] if dof >= 3 else [f"{dof} residual degree(s) of freedom: the baseline curve is barely constrained"]
    pooled = pooled_groups(df, k, loss, seed_col) if check_pooled else None
    if pooled:
        warnings.append(pooled)
    fit = Fit("data_scaling", {"alpha": float(est[0]), "B": float(est[1]), "beta": float(est[2])}, n=len(y),
              objective=float(np.sum(resid**2)), warnings=warnings,
              details={"form": f"{loss} = alpha * {k}^-B + beta", "objective": "SSE", "loss_noise": loss_noise})
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        if len(np.unique(kk)) < len(kk):  # repeats: resample rows within each k
            idx = np.stack([np.concatenate([rng.choice(np.flatnonzero(kk == v), (kk == v).sum())
                                            for v in np.unique(kk)]) for _ in range(n_boot)])
            kb, Yb = kk[idx[0]], y[idx]
            fit.details["bootstrap"] = "resample rows within each k"
        else:
            sd = float(np.sqrt(np.sum(resid**2) / max(dof, 1)))
            sigma = max(sd, loss_noise or 0.0)
            kb, Yb = kk, (y - resid)[None] + sigma * rng.standard_normal((n_boot, len(y)))
            fit.details["bootstrap"] = (f"parametric, residual sd {sd:.3g}" +
                                        (f" floored at loss_noise {loss_noise:.3g}" if sigma > sd else ""))
        samples = pd.DataFrame(_fit_saturating(kb, Yb), columns=["alpha", "B", "beta"])
        fit.samples = samples
        fit.ci = {c: tuple(np.nanquantile(samples[c], [(1 - level) / 2, (1 + level) / 2])) for c in samples}
    return fit


def effective_multiple(params, loss) -> np.ndarray:
    """k_eff = ((L - beta) / alpha)^(-1/B); inf where L <= beta."""
    loss = np.asarray(loss, float)
    gap = (loss - params["beta"]) / params["alpha"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, gap ** (-1.0 / params["B"]), np.inf)


@public
def optimizer_speedup(df: pd.DataFrame, optimizer: str = "optimizer", k: str = "k", loss: str = "loss",
                      baseline: str = "adamw", by: str | Sequence[str] = (), *, seed_col: str | None = None,
                      loss_noise: float | None = None, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> tuple[pd.DataFrame, dict[str, Fit]]:
    """Speedup of every optimizer over the baseline at each (by-group, k). Returns (table with columns
    by..., optimizer, k, loss, n_runs, k_eff, speedup, speedup_lo, speedup_hi, interval,
    beyond_asymptote; the baseline Fit per group label).

    by: the columns of one comparison (model size, ...). Rows that repeat (optimizer, k) at different
    loss with no seed_col are treated as seeds, with an AnalysisWarning naming the columns that would
    separate them (several model sizes pooled?). The interval includes the compared optimizer's noise:
    its seeds when it has repeats, else loss_noise (see the module docstring), and warns that it is
    conditional when there are no seeds. Rows with a NaN loss (diverged runs) are dropped, warned."""
    by = as_list(by)
    what = "optimizer_speedup"
    require_frame(df, what)
    require_columns(df, [optimizer, k, loss, *by, seed_col], what)
    y_all = numeric(df, loss, what)
    nan = ~np.isfinite(y_all)
    if nan.any():
        cells = df.loc[nan, [optimizer, k]].drop_duplicates().head(4).itertuples(index=False)
        pywarnings.warn(f"{what}: {int(nan.sum())} row(s) with a non-finite {loss!r} dropped (diverged?), e.g. "
                        + ", ".join(f"{optimizer}={o}, {k}={v}" for o, v in cells), AnalysisWarning, stacklevel=3)
        df = df[~nan]
    if loss_noise is not None and not (np.isfinite(loss_noise) and loss_noise >= 0):
        raise AnalysisError(f"{what}: loss_noise={loss_noise!r} must be a finite number >= 0")
    rows, fits = [], {}
    for key, label, g in iter_groups(df, by, what):
        where = f"group {label}" if by else "all rows"
        pooled = pooled_groups(g, [optimizer, k], loss, seed_col, ignore=by, what=f"{what} ({where})",
                               require_hint=bool(by))
        if pooled:
            pywarnings.warn(pooled, AnalysisWarning, stacklevel=3)
        base = g[g[optimizer] == baseline]
        if base.empty:
            raise AnalysisError(f"{what}: no {baseline!r} rows in column {optimizer!r} for {where}")
        try:
            fit = fit_data_scaling(base, k, loss, seed_col=seed_col, loss_noise=loss_noise, n_boot=n_boot, seed=seed,
                                   level=level, check_pooled=False)
        except AnalysisError as e:
            raise AnalysisError(f"{what}: the baseline {baseline!r} ({where}): {str(e).split(': ', 1)[-1]}") from None
        if pooled:
            fit.warnings.append(pooled)
        fits[label if by else "all"] = fit
        rng = np.random.default_rng(seed + 1)
        single = []
        for (opt, kv), vals in g[g[optimizer] != baseline].groupby([optimizer, k], sort=True)[loss]:
            vals = vals.to_numpy(float)
            lv = float(vals.mean())
            k_eff = float(effective_multiple(fit.params, lv))
            row = dict(zip(by, key)) | {optimizer: opt, k: kv, loss: lv, "n_runs": len(vals), "k_eff": k_eff,
                                        "speedup": k_eff / kv, "beyond_asymptote": not np.isfinite(k_eff)}
            if fit.samples is not None:
                R = len(fit.samples)
                if len(vals) > 1:  # the compared side's seeds
                    lv_b = vals[rng.integers(0, len(vals), (R, len(vals)))].mean(1)
                    row["interval"] = f"bootstrap over {len(vals)} seeds and the baseline curve"
                elif loss_noise:
                    lv_b = lv + loss_noise * rng.standard_normal(R)
                    row["interval"] = f"conditional on loss_noise={loss_noise:g} (one run)"
                    single.append(f"{opt} at {k}={kv:g}")
                else:
                    lv_b = lv
                    row["interval"] = "baseline curve only: the compared loss taken as exact (one run)"
                    single.append(f"{opt} at {k}={kv:g}")
                s_ = effective_multiple({c: fit.samples[c].to_numpy() for c in ("alpha", "B", "beta")}, lv_b) / kv
                row["speedup_lo"], row["speedup_hi"] = np.nanquantile(s_, [(1 - level) / 2, (1 + level) / 2])
            rows.append(row)
        if single:
            shown = ", ".join(single[:4]) + (" ..." if len(single) > 4 else "")
            how = (f"conditional on a loss noise of sd {loss_noise:g} (loss_noise)" if loss_noise else
                   "conditional on the compared losses being exact (pass loss_noise=, the run-to-run sd of a loss)")
            fit.warnings.append(f"{len(single)} speedup(s) rest on one run each ({shown}): their intervals are {how}")
    return pd.DataFrame(rows), fits

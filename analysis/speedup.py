"""Optimizer speedup relative to a baseline ("Fantastic Pretraining Optimizers", Wen et al. 2025,
arXiv 2509.02046).

Per model size, fit the baseline's final loss against the data multiple k as L(k) = alpha k^-B + beta.
For another optimizer with loss L_o at multiple k, k_eff = ((L_o - beta) / alpha)^(-1/B) is the data the
baseline would need; speedup = k_eff / k. L_o <= beta makes k_eff infinite: the speedup is reported as
inf ("beyond the baseline's asymptote"). With 4 points and 3 parameters the baseline curve has one
residual degree of freedom, so intervals come from resampling seeds within each k when there are
repeats, else from a parametric bootstrap on the residual scale, and carry a warning.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.validate import as_list, positive, require_columns, require_frame

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


def fit_data_scaling(df: pd.DataFrame, k: str = "k", loss: str = "loss", *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> Fit:
    """L(k) = alpha k^-B + beta for one optimizer and model size (rows may repeat k over seeds)."""
    what = "fit_data_scaling"
    require_frame(df, what)
    require_columns(df, [k, loss], what)
    kk, y = positive(df, k, what), positive(df, loss, what)
    if len(np.unique(kk)) < 3:
        raise AnalysisError(f"{what}: column {k!r} has {len(np.unique(kk))} distinct value(s); need at least 3")
    est = _fit_saturating(kk, y[None])[0]
    resid = y - (est[0] * kk ** -est[1] + est[2])
    dof = len(y) - 3
    warnings = [] if dof >= 3 else [f"{dof} residual degree(s) of freedom: the baseline curve is barely constrained"]
    fit = Fit("data_scaling", {"alpha": float(est[0]), "B": float(est[1]), "beta": float(est[2])}, n=len(y),
              objective=float(np.sum(resid**2)), warnings=warnings,
              details={"form": f"{loss} = alpha * {k}^-B + beta", "objective": "SSE"})
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        if len(np.unique(kk)) < len(kk):  # repeats: resample rows within each k
            idx = np.stack([np.concatenate([rng.choice(np.flatnonzero(kk == v), (kk == v).sum())
                                            for v in np.unique(kk)]) for _ in range(n_boot)])
            kb, Yb = kk[idx[0]], y[idx]
            fit.details["bootstrap"] = "resample rows within each k"
        else:
            sigma = np.sqrt(np.sum(resid**2) / max(dof, 1))
            kb, Yb = kk, (y - resid)[None] + sigma * rng.standard_normal((n_boot, len(y)))
            fit.details["bootstrap"] = f"parametric, residual sd {sigma:.3g}"
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


def optimizer_speedup(df: pd.DataFrame, optimizer: str = "optimizer", k: str = "k", loss: str = "loss",
                      baseline: str = "adamw", by: str | Sequence[str] = (), *, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Fit]]:
    """Speedup of every optimizer over the baseline at each (by-group, k). Returns (table with columns
    by..., optimizer, k, loss, k_eff, speedup, speedup_lo, speedup_hi, beyond_asymptote; the baseline
    Fit per group)."""
    by = as_list(by)
    what = "optimizer_speedup"
    require_frame(df, what)
    require_columns(df, [optimizer, k, loss, *by], what)
    rows, fits = [], {}
    groups = df.groupby(by, sort=True) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{b}={v}" for b, v in zip(by, key)) or "all"
        base = g[g[optimizer] == baseline]
        if base.empty:
            raise AnalysisError(f"{what}: no {baseline!r} rows in column {optimizer!r} for group {label}")
        fit = fit_data_scaling(base, k, loss, n_boot=n_boot, seed=seed, level=level)
        fits[label] = fit
        rng = np.random.default_rng(seed + 1)
        for (opt, kv), vals in g[g[optimizer] != baseline].groupby([optimizer, k], sort=True)[loss]:
            vals = vals.to_numpy(float)
            lv = float(vals.mean())
            k_eff = float(effective_multiple(fit.params, lv))
            row = dict(zip(by, key)) | {optimizer: opt, k: kv, loss: lv, "k_eff": k_eff, "speedup": k_eff / kv,
                                        "beyond_asymptote": not np.isfinite(k_eff)}
            if fit.samples is not None:
                # both sides vary: the baseline curve's replicates and, with repeats, this optimizer's mean loss
                lv_b = vals[rng.integers(0, len(vals), (len(fit.samples), len(vals)))].mean(1) if len(vals) > 1 else lv
                s = effective_multiple({c: fit.samples[c].to_numpy() for c in ("alpha", "B", "beta")}, lv_b) / kv
                row["speedup_lo"], row["speedup_hi"] = np.nanquantile(s, [(1 - level) / 2, (1 + level) / 2])
            rows.append(row)
    return pd.DataFrame(rows), fits

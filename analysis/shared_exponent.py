"""Optimizer comparison with shared exponents: one L(D) (or L(N, D)) law for every optimizer, with an
optimizer-specific data multiplier, and the speedup as a ratio of multipliers with an interval.

Separate Chinchilla fits per optimizer are ill-conditioned (E, B and beta trade off within each fit, so
two optimizers' exponents differ by noise and their "speedup" then depends on D). Sharing the exponents
and the irreducible loss, and letting only the multiplier differ, is the constrained comparison:

    L_o(D)    = E + B_o D^-beta                                      (shared E, beta)
    L_o(N, D) = E + A N^-alpha + B_o D^-beta                          (shared E, A, alpha, beta)

Written as B_o = B (k_o)^-beta with k_baseline = 1, optimizer o reaches at D tokens the loss the baseline
reaches at k_o D, at every D: k_o = (B_baseline / B_o)^(1/beta) is its data speedup (the "effective data
multiplier"; Wen et al. 2025, "Fantastic Pretraining Optimizers", arXiv 2509.02046, measure speedups as
such data ratios, there per D from the baseline's curve, analysis.speedup). The multiplier ratio
B_o / B_baseline = k_o^-beta is reported too.

Fit: least squares of log L_hat - log L (relative errors, as Hoffmann et al.'s Approach 3) with
scipy's trust-region solver from a grid of starts; D and N are divided by their geometric means inside
the fit (conditioning) and B, A are reported in the original units. Intervals: bootstrap over rows
stratified by optimizer (every replicate keeps each optimizer's row count), each refitted from the
estimate. A check for the shared-exponent assumption: the same data refitted with one beta per optimizer
(E shared) and an F-test of the extra parameters; a small p-value is reported as a warning (the speedup
then changes with D).
"""

from __future__ import annotations

import warnings as pywarnings

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares

from analysis.bootstrap import summarize
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.fit import Fit
from analysis.validate import numeric, positive, public, require_columns, require_frame


class _Model:
    """Parameter vector: log E, log B, beta, [log A, alpha], log k_o for each non-baseline optimizer,
    [beta_o - beta for each non-baseline optimizer when free_beta]."""

    def __init__(self, opt_idx: np.ndarray, n_opts: int, logD: np.ndarray, logN: np.ndarray | None,
                 free_beta: bool = False):
        self.o, self.K, self.logD, self.logN, self.free = opt_idx, n_opts, logD, logN, free_beta
        self.base = 3 + (2 if logN is not None else 0)
        self.size = self.base + (n_opts - 1) * (2 if free_beta else 1)

    def _unpack(self, th):
        logk = np.concatenate([[0.0], th[self.base:self.base + self.K - 1]])
        dbeta = np.concatenate([[0.0], th[self.base + self.K - 1:]]) if self.free else np.zeros(self.K)
        return logk, dbeta

    def terms(self, th):
        logE, logB, beta = th[0], th[1], th[2]
        logk, dbeta = self._unpack(th)
        b = beta + dbeta[self.o]
        parts = [np.full(len(self.logD), logE), logB - b * (logk[self.o] + self.logD)]
        if self.logN is not None:
            parts.append(th[3] - th[4] * self.logN)
        return np.stack(parts)  # log of each additive term

    def log_pred(self, th):
        t = self.terms(th)
        m = t.max(0)
        return m + np.log(np.exp(t - m).sum(0))

    def jac(self, th):
        t = self.terms(th)
        w = np.exp(t - self.log_pred(th)[None])  # share of each term in L_hat
        logE, logB, beta = th[0], th[1], th[2]
        logk, dbeta = self._unpack(th)
        b = beta + dbeta[self.o]
        J = np.zeros((len(self.logD), self.size))
        J[:, 0] = w[0]
        J[:, 1] = w[1]
        J[:, 2] = -w[1] * (logk[self.o] + self.logD)
        if self.logN is not None:
            J[:, 3] = w[2]
            J[:, 4] = -w[2] * self.logN
        for j in range(1, self.K):
            rows = self.o == j
            J[rows, self.base + j - 1] = -w[1][rows] * b[rows]
            if self.free:
                J[rows, self.base + self.K - 1 + j - 1] = -w[1][rows] * (logk[j] + self.logD[rows])
        return J


def _solve(model: _Model, logL: np.ndarray, W: np.ndarray | None, starts) -> least_squares:
    sw = np.ones_like(logL) if W is None else np.sqrt(W)

    def resid(th):
        return sw * (model.log_pred(th) - logL)

    def jac(th):
        return sw[:, None] * model.jac(th)

    lo = np.full(model.size, -np.inf)
    hi = np.full(model.size, np.inf)
    lo[2], hi[2] = 1e-3, 5.0
    if model.logN is not None:
        lo[4], hi[4] = 1e-3, 5.0
    best = None
    for x0 in starts:
        x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
        with np.errstate(all="ignore"):
            r = least_squares(resid, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", xtol=1e-12,
                              ftol=1e-12, gtol=1e-12, max_nfev=500)
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    return best


def _start_grid(model: _Model, L: np.ndarray) -> list[np.ndarray]:
    starts = []
    lmin = float(np.min(L))
    for e_frac in (0.5, 0.8, 0.95):
        for beta in (0.1, 0.3, 0.7):
            x = np.zeros(model.size)
            x[0] = np.log(e_frac * lmin)
            x[1] = np.log(max(np.mean(L) - e_frac * lmin, 1e-3 * lmin))
            x[2] = beta
            if model.logN is not None:
                x[1] -= np.log(2)
                x[3], x[4] = x[1], beta
            starts.append(x)
    return starts


@public
def fit_shared_exponent(df: pd.DataFrame, optimizer: str = "optim.name", d: str = "tokens",
                        loss: str = "final_val_loss", *, n: str | None = None, baseline: str = "adamw",
                        n_boot: int = 500, level: float = 0.95, seed: int = 0, check_exponents: bool = True) -> Fit:
    """Shared-exponent law across optimizers; params E, B, beta (and A, alpha with n), then per
    non-baseline optimizer o: speedup[o] (= k_o, data multiplier) and multiplier_ratio[o] (= B_o / B_baseline
    = k_o^-beta). B is the baseline's multiplier in the original units of D."""
    what = "fit_shared_exponent"
    require_frame(df, what)
    require_columns(df, [optimizer, d, loss, n], what)
    no_opt = df[optimizer].isna().to_numpy()
    if no_opt.any():
        pywarnings.warn(f"{what}: {int(no_opt.sum())} row(s) with no value in {optimizer!r} dropped (a NaN group key)",
                        AnalysisWarning, stacklevel=2)
        df = df[~no_opt]
        if df.empty:
            raise AnalysisError(f"{what}: every row has a NaN in {optimizer!r}")
    ok = np.isfinite(numeric(df, loss, what)) & np.isfinite(numeric(df, d, what))
    if not ok.all():
        nan_groups = df.loc[~ok, optimizer].astype(str).value_counts().to_dict()
        if ok.sum() == 0:
            raise AnalysisError(f"{what}: no row has a finite {loss!r} and {d!r} (non-finite per optimizer: "
                                f"{nan_groups})")
    data = df[ok]
    labels = data[optimizer].astype(str).to_numpy()
    opts = sorted(set(labels))
    if baseline not in opts:
        raise AnalysisError(f"{what}: baseline {baseline!r} has no finite rows in column {optimizer!r} "
                            f"(optimizers: {', '.join(opts)})")
    opts = [baseline] + [o for o in opts if o != baseline]
    if len(opts) < 2:
        raise AnalysisError(f"{what}: only the baseline {baseline!r} is present; nothing to compare")
    D, L = positive(data, d, what), positive(data, loss, what)
    N = positive(data, n, what) if n else None
    oi = np.array([opts.index(v) for v in labels])
    warnings = []
    if not ok.all():
        warnings.append(f"{int((~ok).sum())} row(s) with a non-finite {loss} or {d} dropped "
                        f"(per optimizer: {nan_groups})")
    base_d = np.unique(D[oi == 0]).size
    if base_d < 3:
        raise AnalysisError(f"{what}: the baseline {baseline!r} has {base_d} distinct {d} value(s); need at least 3")
    for j, o in enumerate(opts[1:], 1):
        nd = np.unique(D[oi == j]).size
        if nd < 2:
            warnings.append(f"{o}: {nd} distinct {d} value: its speedup rests on one point of the shared curve")
    n_par = 3 + (2 if n else 0) + len(opts) - 1
    if len(L) < n_par + 2:
        raise AnalysisError(f"{what}: {len(L)} rows for {n_par} parameters; need at least {n_par + 2}")
    d_ref = float(np.exp(np.mean(np.log(D))))
    n_ref = float(np.exp(np.mean(np.log(N)))) if n else 1.0
    logD = np.log(D / d_ref)
    logN = np.log(N / n_ref) if n else None
    logL = np.log(L)
    model = _Model(oi, len(opts), logD, logN)
    best = _solve(model, logL, None, _start_grid(model, L))
    if best is None:
        raise AnalysisError(f"{what}: the optimiser found no finite solution")
    theta = best.x
    params = _params(theta, model, opts, d_ref, n_ref)
    resid = model.log_pred(theta) - logL
    ss_tot = float(np.sum((logL - logL.mean()) ** 2))
    if np.ptp(np.log10(D)) < 1:
        warnings.append(f"{d} spans {np.ptp(np.log10(D)):.2f} decades: E and beta trade off, the speedup "
                        "leans on the shared exponent")
    if params["E"] < 1e-3 * L.min():
        warnings.append("E went to ~0: the data show no saturation, the irreducible loss is not identified")
    details = {"form": "L_o = E" + (" + A N^-alpha" if n else "") + " + B (k_o D)^-beta, k_baseline = 1",
               "objective": "SSE of log L_hat - log L", "optimizer": "scipy least_squares (trf, analytic "
               "Jacobian), 9 starts", "baseline": baseline, "optimizers": opts, "D_ref": d_ref, "N_ref": n_ref,
               "columns": {"optimizer": optimizer, "D": d, "loss": loss, "N": n},
               "rows_per_optimizer": {o: int((oi == j).sum()) for j, o in enumerate(opts)}}
    fit = Fit("shared_exponent", params, objective=float(np.sum(resid**2)), n=len(L),
              r2=float(1 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else None, warnings=warnings, details=details)
    if check_exponents and all(np.unique(D[oi == j]).size >= 3 for j in range(len(opts))):
        free = _Model(oi, len(opts), logD, logN, free_beta=True)
        start = np.concatenate([theta, np.zeros(len(opts) - 1)])
        rf = _solve(free, logL, None, [start])
        sse0, sse1 = float(np.sum(resid**2)), 2 * float(rf.cost) if rf is not None else np.nan
        df1, df2 = len(opts) - 1, len(L) - free.size
        if rf is not None and df2 > 0 and sse1 > 0:
            F = ((sse0 - sse1) / df1) / (sse1 / df2)
            p = float(stats.f.sf(F, df1, df2))
            betas = {o: float(rf.x[2] + (0.0 if j == 0 else rf.x[free.base + len(opts) - 1 + j - 1]))
                     for j, o in enumerate(opts)}
            fit.details["exponent_check"] = {"F": float(F), "p_value": p, "df": [df1, df2], "free_betas": betas}
            if p < 0.01:
                fit.warnings.append(f"one beta per optimizer fits better (F-test p = {p:.2g}; betas " +
                                    ", ".join(f"{o} {b:.3f}" for o, b in betas.items()) +
                                    "): the exponents differ and the speedup changes with D")
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(oi == j) for j in range(len(opts))]
        reps = []
        for _ in range(n_boot):
            W = np.zeros(len(L))
            for g in groups:
                np.add.at(W, rng.choice(g, len(g)), 1.0)
            r = _solve(model, logL, W, [theta])
            reps.append(_params(r.x, model, opts, d_ref, n_ref) if r is not None else
                        {k: np.nan for k in params})
        fit.samples = pd.DataFrame(reps)
        fit.ci, fit.se = summarize(fit.samples, level)
        fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level,
                                    "method": "resample rows within each optimizer, refit from the estimate"}
    return fit


def _params(theta, model: _Model, opts, d_ref, n_ref) -> dict[str, float]:
    beta = float(theta[2])
    out = {"E": float(np.exp(theta[0])), "B": float(np.exp(theta[1]) * d_ref**beta), "beta": beta}
    if model.logN is not None:
        alpha = float(theta[4])
        out.update(A=float(np.exp(theta[3]) * n_ref**alpha), alpha=alpha)
    for j, o in enumerate(opts[1:], 1):
        k = float(np.exp(theta[model.base + j - 1]))
        out[f"speedup[{o}]"] = k
        out[f"multiplier_ratio[{o}]"] = k**-beta
    return out


def shared_exponent_table(fit: Fit) -> pd.DataFrame:
    """One row per optimizer: speedup (data multiplier k, 1 for the baseline) and multiplier ratio B_o/B_base
    with intervals."""
    rows = []
    for o in fit.details["optimizers"]:
        if o == fit.details["baseline"]:
            rows.append({"optimizer": o, "speedup": 1.0, "speedup_lo": 1.0, "speedup_hi": 1.0,
                         "multiplier_ratio": 1.0, "ratio_lo": 1.0, "ratio_hi": 1.0, "baseline": True})
            continue
        s, r = f"speedup[{o}]", f"multiplier_ratio[{o}]"
        slo, shi = fit.ci.get(s, (np.nan, np.nan))
        rlo, rhi = fit.ci.get(r, (np.nan, np.nan))
        rows.append({"optimizer": o, "speedup": fit.params[s], "speedup_lo": slo, "speedup_hi": shi,
                     "multiplier_ratio": fit.params[r], "ratio_lo": rlo, "ratio_hi": rhi, "baseline": False})
    return pd.DataFrame(rows)


def predict_shared_exponent(fit: Fit, optimizer_values, D, N=None) -> np.ndarray:
    """L_hat for each (optimizer, D[, N]) row."""
    p = fit.params
    base = fit.details["baseline"]
    k = np.array([1.0 if o == base else p[f"speedup[{o}]"] for o in np.asarray(optimizer_values).astype(str)])
    out = p["E"] + p["B"] * (k * np.asarray(D, float)) ** -p["beta"]
    if "A" in p and N is not None:
        out = out + p["A"] * np.asarray(N, float) ** -p["alpha"]
    return out

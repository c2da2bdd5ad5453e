"""The AdamW weight-decay timescale and its scaling law.

With lr-coupled weight decay (PyTorch AdamW and optax's adamw: theta <- theta - eta (u + lambda theta)),
the weights are an exponential moving average of the updates with smoothing eta lambda, so their memory
is tau_iter = 1 / (eta lambda) iterations (Wang & Aitchison 2024, "How to set AdamW's weight decay as
you scale model and dataset size", arXiv 2405.13698). Measured in epochs of the run (the fraction of
training it spans), tau = tau_iter / S with S = D / B iterations:

    tau = B / (eta lambda D) = 1 / (eta lambda S)      (B and D in the same unit, e.g. tokens)

Bergsma et al. 2025 ("Power Lines: Scaling Laws for Weight Decay and Batch Size in LLM Pre-training",
arXiv 2505.13738) find that the optimal tau is not constant but a power law in tokens per parameter:

    tau*(N, D) = c (D / N)^m,   hence   lambda*(N, D, B, eta) = B / (eta D tau*(D/N)) = 1 / (eta S c (D/N)^m).

Here: tau per run from (eta, lambda, S); tau* per (N, D) (and any extra keys such as B) from a sweep of
lambda (or of B or eta) as the vertex of a parabola of loss in log2 tau (analysis.optimum.find_optima,
edge flags, intervals); the law by OLS in log space over the interior optima with a bootstrap that
propagates each optimum's interval (analysis.powerlaw). Simplifications: eta is the configured (peak)
lr, so under a decaying schedule tau is the timescale at the peak lr (Bergsma et al. use the same
convention); weight decay applied to only some parameter roles is not distinguished.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.optimum import find_optima, optimum_warnings
from analysis.powerlaw import fit_power_law
from analysis.validate import as_list, numeric, pooled_groups, public, require_columns, require_frame


@public
def adamw_timescale(lr, weight_decay, steps=None, *, batch=None, tokens=None) -> np.ndarray:
    """tau = 1 / (eta lambda S) in epochs of the run: S = steps, or S = tokens / batch (same units).
    inf where lambda = 0 (no decay: an unbounded memory)."""
    eta, lam = np.asarray(lr, float), np.asarray(weight_decay, float)
    if steps is None:
        if batch is None or tokens is None:
            raise AnalysisError("adamw_timescale: give steps, or batch and tokens (in the same unit)")
        S = np.asarray(tokens, float) / np.asarray(batch, float)
    else:
        S = np.asarray(steps, float)
    with np.errstate(divide="ignore"):
        return 1.0 / (eta * lam * S)


@public
def timescale_table(df: pd.DataFrame, lr: str = "optim.lr", wd: str = "optim.weight_decay", steps: str = "steps",
                    n: str = "n_params", d: str = "tokens") -> pd.DataFrame:
    """df with columns tau (epochs of the run), tau_iter = 1/(eta lambda) and tpp = D/N added."""
    what = "timescale_table"
    require_frame(df, what)
    require_columns(df, [lr, wd, steps, n, d], what)
    eta, lam, S = numeric(df, lr, what), numeric(df, wd, what), numeric(df, steps, what)
    if np.any(eta[np.isfinite(eta)] <= 0) or np.any(S[np.isfinite(S)] <= 0):
        raise AnalysisError(f"{what}: columns {lr!r} and {steps!r} must be > 0")
    out = df.copy()
    with np.errstate(divide="ignore"):
        out["tau_iter"] = 1.0 / (eta * lam)
    out["tau"] = adamw_timescale(eta, lam, S)
    out["tpp"] = numeric(df, d, what) / numeric(df, n, what)
    return out


@public
def fit_wd_timescale(df: pd.DataFrame, loss: str = "final_val_loss", *, lr: str = "optim.lr",
                     wd: str = "optim.weight_decay", steps: str = "steps", n: str = "n_params", d: str = "tokens",
                     by: str | Sequence[str] = (), seed_col: str | None = None, diverged_col: str | None = None,
                     method: str = "quadratic", k: int = 5, n_boot: int = 500, level: float = 0.95,
                     seed: int = 0) -> tuple[pd.DataFrame, Fit]:
    """tau* per (N, D, *by) and the law tau* = c (D/N)^m.

    Returns (optima, fit): optima has the group keys, tpp, tau_opt (= x_opt of find_optima) with its
    interval tau_lo/tau_hi, the loss there, edge/concave flags and ok; fit has params c and m with
    bootstrap intervals (replicates also redraw each tau* from its own bootstrap), samples and warnings.
    Runs with lambda = 0 (tau = inf) are excluded with a warning. Raises AnalysisError with fewer than 3
    interior optima or when every group has a single tpp.
    """
    by = as_list(by)
    what = "fit_wd_timescale"
    table = timescale_table(df, lr, wd, steps, n, d)
    require_columns(table, [loss, *by, seed_col, diverged_col], what)
    warnings = []
    inf = ~np.isfinite(table["tau"].to_numpy(float))
    if inf.any():
        warnings.append(f"{int(inf.sum())} run(s) with {wd} = 0 (no decay, tau = inf) excluded")
        table = table[~inf]
    if table.empty:
        raise AnalysisError(f"{what}: no run with a finite timescale (every {wd} is 0?)")
    keys = [n, d, *by]
    pooled = pooled_groups(table, [*keys, "tau"], loss, seed_col, ignore=[lr, wd, steps, "tau_iter", "tpp"],
                           what=what)
    if pooled:
        warnings.append(pooled)
    optima, samples = find_optima(table, "tau", loss, keys, method=method, k=k, seed_col=seed_col,
                                  diverged_col=diverged_col, n_boot=n_boot, level=level, seed=seed, empty="keep",
                                  return_samples=True)
    warnings += optimum_warnings(optima, keys)
    optima = optima.rename(columns={"x_opt": "tau_opt", "x_lo": "tau_lo", "x_hi": "tau_hi", "y_opt": "loss_opt"})
    optima.insert(len(keys), "tpp", optima[d].to_numpy(float) / optima[n].to_numpy(float))
    ok = optima[optima["ok"].to_numpy(bool)]
    if len(ok) < len(optima):
        warnings.append(f"{len(optima) - len(ok)} of {len(optima)} optima excluded from the law (edge, concave "
                        "or empty)")
    if len(ok) < 3:
        raise AnalysisError(f"{what}: {len(ok)} interior optimum/optima of tau, need at least 3 for tau*(D/N)")
    span = float(np.ptp(np.log10(ok["tpp"].to_numpy(float))))
    if span < 0.1:
        raise AnalysisError(f"{what}: every interior optimum has about the same tokens per parameter "
                            f"({ok['tpp'].min():.3g} to {ok['tpp'].max():.3g}, {span:.2f} decades); the exponent m "
                            "needs D/N to vary")
    law = fit_power_law(ok.reset_index(drop=True), "tpp", "tau_opt", n_boot=n_boot, level=level, seed=seed,
                        y_samples=samples[:, ok.index.to_numpy()] if n_boot > 0 else None, name="wd_timescale")
    law.params = {"c": law.params["a"], "m": law.params["b"]}
    if law.samples is not None:
        law.samples = law.samples.rename(columns={"a": "c", "b": "m"})
        law.ci = {"c": law.ci.get("a"), "m": law.ci.get("b")}
        law.se = {"c": law.se.get("a"), "m": law.se.get("b")}
    law.warnings = warnings + [w.replace("tpp", "tokens per parameter") for w in law.warnings]
    law.details.update({"form": "tau* = c (D/N)^m, tau = 1 / (eta lambda S) (Bergsma et al. 2025)",
                        "lambda_opt": "lambda* = 1 / (eta S c (D/N)^m) = B / (eta D tau*)",
                        "columns": {"lr": lr, "wd": wd, "steps": steps, "N": n, "D": d, "loss": loss, "by": by},
                        "n_groups": len(optima), "n_interior": len(ok)})
    return optima, law


def tau_opt(fit: Fit, n, d) -> np.ndarray:
    """tau*(N, D) = c (D/N)^m from a fit_wd_timescale law."""
    return fit.params["c"] * (np.asarray(d, float) / np.asarray(n, float)) ** fit.params["m"]


@public
def lambda_opt(fit: Fit, n, d, lr, steps=None, *, batch=None, level: float = 0.95):
    """lambda*(N, D, B, eta) = 1 / (eta S tau*(D/N)), S = steps or D / batch (batch in D's unit).

    Returns (estimate, lo, hi): the interval from the law's bootstrap replicates (NaN without them)."""
    S = np.asarray(steps, float) if steps is not None else np.asarray(d, float) / np.asarray(batch, float)
    est = 1.0 / (np.asarray(lr, float) * S * tau_opt(fit, n, d))
    if fit.samples is None or fit.samples.empty:
        return est, np.full_like(est, np.nan), np.full_like(est, np.nan)
    c, m = fit.samples["c"].to_numpy()[:, None], fit.samples["m"].to_numpy()[:, None]
    tpp = (np.asarray(d, float) / np.asarray(n, float)).reshape(1, -1)
    reps = 1.0 / (np.asarray(lr, float).reshape(1, -1) * S.reshape(1, -1) * c * tpp**m)
    lo, hi = np.nanquantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=0)
    shape = np.shape(est)
    return est, lo.reshape(shape), hi.reshape(shape)

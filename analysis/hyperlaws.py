"""Optimal learning-rate and batch-size laws fitted on near-optimal runs.

- StepLaw (Li et al. 2025, "Predictable Scale Part I", arXiv 2503.04715): within each (N, D) group keep
  every run with loss / group minimum - 1 < tol (0.25 %), then regress log eta on [log N, log D] and
  log B on [log D] over all kept runs (their form: eta = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571).
- DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954): the same near-optimal band per compute budget C,
  then eta_opt = k C^a and B_opt = k' C^b (their fit: 0.3118 C^-0.1250, 0.2920 C^0.3271, B in tokens).
Hyperparameters and group keys are snapped to their grid first (StepLaw's rounding caveat), and the
bootstrap resamples whole groups (near-optimal runs of one group are not independent).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import summarize
from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.grid import snap_relative
from analysis.powerlaw import fit_log_linear, fit_power_law
from analysis.validate import as_list, finite_rows, numeric, public, require_columns, require_frame


@public
def snap_columns(df: pd.DataFrame, columns: Sequence[str], rtol: float = 1e-3) -> pd.DataFrame:
    """Copy of df with each listed numeric column snapped to its grid (values within rtol merged)."""
    out = df.copy()
    for c in columns:
        out[c] = snap_relative(numeric(out, c, "snap_columns"), rtol)
    return out


@public
def near_optimal(df: pd.DataFrame, loss: str, by: str | Sequence[str], tol: float = 0.0025) -> pd.DataFrame:
    """Rows whose loss is within a relative tol of their group's best (non-finite losses dropped).
    Adds columns `rel_gap` (loss / group min - 1) and `is_best`."""
    by = as_list(by)
    what = "near_optimal"
    require_frame(df, what)
    require_columns(df, [loss, *by], what)
    d = df[finite_rows(df, [loss])].copy()
    if d.empty:
        raise AnalysisError(f"{what}: no finite values in column {loss!r}")
    best = d.groupby(by, dropna=False)[loss].transform("min")
    d["rel_gap"] = d[loss] / best - 1
    d["is_best"] = d["rel_gap"] == 0
    return d[d["rel_gap"] < tol].copy() if tol > 0 else d[d["is_best"]].copy()


def _group_id(df: pd.DataFrame, by: list[str]) -> np.ndarray:
    return df.groupby(by, dropna=False).ngroup().to_numpy()


@public
def fit_steplaw(df: pd.DataFrame, lr: str = "lr", batch: str = "batch_tokens", n: str = "N", d: str = "D",
                loss: str = "loss", *, tol: float = 0.0025, snap_rtol: float = 1e-3, n_boot: int = 1000,
                level: float = 0.95, seed: int = 0) -> dict[str, Fit]:
    """StepLaw: eta(N, D) = a N^alpha D^beta and B(D) = a' D^gamma on the near-optimal runs of every
    (N, D) group. Returns {"lr": Fit (params a = the prefactor, and one exponent per column, keyed n
    and d), "batch": Fit (a = the prefactor, b)}: both laws report their prefactor as "a" (the lr law's
    natural-log intercept is kept in details["ln_intercept"] with its interval). A regressor that spans
    almost no range (all runs at one N, as in a single-size release) gets a NaN exponent and a warning,
    and the prefactor then holds it at its value (details["held_fixed"])."""
    what = "fit_steplaw"
    require_frame(df, what)
    require_columns(df, [lr, batch, n, d, loss], what)
    snapped = snap_columns(df, [lr, batch, n, d], snap_rtol)
    kept = near_optimal(snapped, loss, [n, d], tol).reset_index(drop=True)
    kept["_group"] = _group_id(kept, [n, d])
    n_groups = kept["_group"].nunique()
    if n_groups < 3:
        raise AnalysisError(f"{what}: {n_groups} (N, D) group(s) with finite {loss!r}; need at least 3")
    f_lr = _as_prefactor(fit_log_linear(kept, lr, [n, d], n_boot=n_boot, level=level, seed=seed, cluster="_group",
                                        name="steplaw_lr"), [n, d], level)
    f_b = fit_power_law(kept, d, batch, n_boot=n_boot, level=level, seed=seed, cluster="_group", name="steplaw_batch")
    for f in (f_lr, f_b):
        f.details.update(near_optimal_tol=tol, n_groups=n_groups, n_runs_kept=len(kept), grouped_by=[n, d],
                         snap_rtol=snap_rtol)
    return {"lr": f_lr, "batch": f_b}


def _as_prefactor(fit: Fit, xs: list[str], level: float) -> Fit:
    """A natural-log log-linear fit with params {xs..., intercept} -> params {a: e^intercept, xs...}."""
    icpt = fit.params["intercept"]
    fit.details["ln_intercept"] = icpt
    fit.details["ln_intercept_ci"] = fit.ci.get("intercept")
    with np.errstate(over="ignore"):
        fit.params = {"a": float(np.exp(icpt)), **{x: fit.params[x] for x in xs}}
        if fit.samples is not None:
            fit.samples = pd.DataFrame({"a": np.exp(fit.samples["intercept"]), **{x: fit.samples[x] for x in xs}})
            fit.ci, fit.se = summarize(fit.samples, level)
    fit.details["form"] = f"{fit.details['y']} = a * " + " * ".join(f"{x}^e_{x}" for x in xs) + \
        " (each exponent e_x keyed by its column)"
    return fit


@public
def fit_deepseek(df: pd.DataFrame, lr: str = "lr", batch: str = "batch_tokens", compute: str = "C",
                 loss: str = "loss", *, tol: float = 0.0025, snap_rtol: float = 1e-2, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> dict[str, Fit]:
    """DeepSeek: eta_opt = k C^a and B_opt = k' C^b on the near-optimal runs of every compute budget.
    Returns {"lr": Fit (a, b), "batch": Fit (a, b)}."""
    what = "fit_deepseek"
    require_frame(df, what)
    require_columns(df, [lr, batch, compute, loss], what)
    snapped = snap_columns(df, [lr, batch], 1e-3)
    snapped = snap_columns(snapped, [compute], snap_rtol)
    kept = near_optimal(snapped, loss, [compute], tol).reset_index(drop=True)
    kept["_group"] = _group_id(kept, [compute])
    n_groups = kept["_group"].nunique()
    if n_groups < 3:
        raise AnalysisError(f"{what}: {n_groups} compute budget(s) with finite {loss!r}; need at least 3")
    out = {"lr": fit_power_law(kept, compute, lr, n_boot=n_boot, level=level, seed=seed, cluster="_group",
                               name="deepseek_lr"),
           "batch": fit_power_law(kept, compute, batch, n_boot=n_boot, level=level, seed=seed, cluster="_group",
                                  name="deepseek_batch")}
    for f in out.values():
        f.details.update(near_optimal_tol=tol, n_groups=n_groups, n_runs_kept=len(kept), grouped_by=[compute])
    return out

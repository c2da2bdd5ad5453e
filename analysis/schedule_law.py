"""Loss-curve laws that know the learning-rate schedule, fitted on (step, lr, loss) curves.

Multi-power law (Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
Schedules", arXiv 2503.12811, eq. 1 and its reference code thu-yao-01-luo/MultiPowerLaw):

    L(t) = L0 + A (S1(t) + S_W)^-alpha - LD(t)
    LD(t) = B sum_{k=W+1}^{t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),   G(x) = 1 - (C x + 1)^-beta
    S1(t) = sum_{tau=W+1}^{t} eta_tau,   S_W = sum_{tau=1}^{W} eta_tau,   S_k(t) = sum_{tau=k}^{t} eta_tau

with W the warmup length and eta_W the peak lr (the paper's eta_0). Seven parameters L0, A, alpha, B,
C, beta, gamma.

LR-annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv 2408.11029):

    L(s) = L0 + A S1^-alpha - C S2,   S1 = sum_{i=1}^{s} eta_i (forward area),
    S2 = sum_{i=1}^{s} m_i,   m_i = lambda m_{i-1} + (eta_{i-1} - eta_i)   (annealing area, momentum form)

with the decay factor lambda (0.999 by default, the paper's choice; lambda -> 1 gives the plain
annealing area sum (eta_max - eta_i), lambda = 0 gives eta_max - eta_s). Four parameters L0, A, alpha, C.

Implementation choices and simplifications (stated, not hidden):
- eta_i is the lr of update i; curves log it every few steps, so the per-step schedule is rebuilt by
  linear interpolation between logged steps (exact for linear warmup / WSD when the breakpoints are
  logged, a close approximation for cosine); before the first logged step it is held constant.
- the warmup W is the number of steps before the schedule first reaches its maximum (0 when the first
  step is already at the maximum). S1 includes the warmup in both laws (S1 + S_W in the multi-power
  law). The annealing increments (eta_{k-1} - eta_k) are accumulated only after the warmup, in both
  laws (Luo et al. define LD after warmup; for Tissue et al. the warmup's negative increments would
  otherwise make S2 negative); steps inside the warmup are not fitted.
- eta_k^-gamma uses max(eta_k, 1e-6 eta_max) so that schedules that decay to exactly 0 stay finite.
- when more than `max_terms` steps change the lr, consecutive increments are merged into blocks
  (increments summed, G evaluated at the block's increment-weighted centre step) to bound the cost;
  at the default 400 blocks the curve moves by < 1e-4 (relative) on a 2,000-step cosine.
- objective: least squares on the loss (the papers use a Huber loss on log residuals with a small
  delta); the first `min_frac` of each curve is not fitted (the initial plateau follows no power law).
- intervals: moving-block bootstrap of the residuals within each curve (residuals along a curve are
  autocorrelated, so single points are not resampled), each replicate refitted from the estimate. When
  the law misfits the curves the residuals are structured, the replicates shift, and an interval that
  excludes its estimate is reported as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.signal import lfilter

from analysis.bootstrap import summarize
from analysis.errors import AnalysisError
from analysis.fit import Fit
from analysis.validate import as_list, numeric, public, require_columns, require_frame

FORMS = ("multi_power", "annealing")
PARAMS = {"multi_power": ("L0", "A", "alpha", "B", "C", "beta", "gamma"), "annealing": ("L0", "A", "alpha", "C")}
ETA_FLOOR = 1e-6


# ---------------------------------------------------------------- schedules and their areas


def per_step_lr(steps, lr) -> np.ndarray:
    """eta_1..eta_T on every integer step 1..max(steps), linearly interpolated between logged steps; before
    the first logged step the first segment is extended linearly (clipped at 0), which is exact for a
    linear warmup and for a constant start when the first two logged steps lie on the same segment."""
    steps, lr = np.asarray(steps, float), np.asarray(lr, float)
    ok = np.isfinite(steps) & np.isfinite(lr) & (steps >= 1)
    if ok.sum() < 2:
        raise AnalysisError("per_step_lr: fewer than 2 logged steps with a finite lr")
    order = np.argsort(steps[ok])
    s, e = steps[ok][order], lr[ok][order]
    s, keep = np.unique(s, return_index=True)
    e = e[keep]
    if s.size < 2:
        raise AnalysisError("per_step_lr: fewer than 2 distinct logged steps with a finite lr")
    grid = np.arange(1, int(s[-1]) + 1, dtype=float)
    eta = np.interp(grid, s, e)
    head = grid < s[0]
    if head.any():
        slope = (e[1] - e[0]) / (s[1] - s[0])
        eta[head] = np.maximum(e[0] + slope * (grid[head] - s[0]), 0.0)
    return eta


def warmup_length(eta: np.ndarray) -> int:
    """Steps before the schedule first reaches its maximum (W; 0 without warmup)."""
    eta = np.asarray(eta, float)
    top = np.max(eta)
    first = int(np.argmax(eta >= top * (1 - 1e-9)))
    return first  # eta[first] is step first+1: W = first steps precede the peak


@dataclass
class Schedule:
    """One schedule: eta (per step), its warmup W, cumulative sums (cum[t] = sum_{i<=t} eta_i, cum[0] = 0)."""
    eta: np.ndarray
    W: int
    cum: np.ndarray

    @classmethod
    def from_lr(cls, eta) -> "Schedule":
        eta = np.asarray(eta, float)
        if eta.ndim != 1 or eta.size < 2 or not np.all(np.isfinite(eta)) or np.any(eta < 0):
            raise AnalysisError("schedule: the lr must be a finite, non-negative 1-d sequence of >= 2 steps")
        if eta.max() <= 0:
            raise AnalysisError("schedule: the lr is 0 at every step")
        return cls(eta, warmup_length(eta), np.concatenate([[0.0], np.cumsum(eta)]))

    @property
    def T(self) -> int:
        return len(self.eta)

    def decrements(self) -> np.ndarray:
        """d[k-1] = eta_{k-1} - eta_k for the steps k after the peak (the peak is step W+1, so the first
        increment counted is eta_{W+1} - eta_{W+2}); 0 up to and including the peak step."""
        d = np.zeros(self.T)
        d[1:] = self.eta[:-1] - self.eta[1:]
        d[: self.W + 1] = 0.0
        return d


def annealing_area(sched: Schedule, decay_factor: float = 0.999) -> np.ndarray:
    """S2 at steps 1..T: cumulative sum of m_i = lambda m_{i-1} + (eta_{i-1} - eta_i) (Tissue et al. 2024)."""
    m = lfilter([1.0], [1.0, -decay_factor], sched.decrements())
    return np.cumsum(m)


@dataclass
class _Design:
    """What the multi-power law needs at the evaluation steps t of one curve (1-based)."""
    t: np.ndarray  # (n,)
    P: np.ndarray  # S1(t) + S_W = cum[t]
    dk: np.ndarray  # (K,) merged decrements
    log_eta_k: np.ndarray  # (K,)
    Skt: np.ndarray  # (n, K) S_k(t) = cum[t] - cum[k-1], 0 where k > t
    S2: np.ndarray  # (n,) annealing area at t (Tissue et al.)
    drop: np.ndarray  # (n,) eta_peak - eta_t after the warmup: LD / B in the limit G = 1


def _design(sched: Schedule, t: np.ndarray, max_terms: int, decay_factor: float) -> _Design:
    t = np.asarray(t, int)
    d = sched.decrements()
    k = np.flatnonzero(d != 0) + 1  # 1-based steps whose lr changed after the warmup
    if k.size > max_terms:  # merge consecutive increments into blocks at their increment-weighted centre step
        edges = np.linspace(0, k.size, max_terms + 1).astype(int)
        blocks = [k[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
        dk = np.array([d[b - 1].sum() for b in blocks])
        centre = [np.average(b, weights=np.abs(d[b - 1])) if np.abs(d[b - 1]).sum() > 0 else b[-1] for b in blocks]
        k = np.array([b[np.argmin(np.abs(b - c))] for b, c in zip(blocks, centre)])
    else:
        dk = d[k - 1]
    eta_floor = ETA_FLOOR * sched.eta.max()
    log_eta_k = np.log(np.maximum(sched.eta[k - 1], eta_floor)) if k.size else np.zeros(0)
    Skt = sched.cum[t][:, None] - sched.cum[k - 1][None, :] if k.size else np.zeros((len(t), 0))
    Skt = np.where(k[None, :] <= t[:, None], Skt, 0.0) if k.size else Skt
    S2 = annealing_area(sched, decay_factor)[t - 1]
    drop = np.cumsum(d)[t - 1]
    return _Design(t, sched.cum[t], dk, log_eta_k, Skt, S2, drop)


# ---------------------------------------------------------------- the two laws and their Jacobians


def _mpl(theta: np.ndarray, ds: _Design, jac: bool = False):
    L0, lA, alpha, lB, lC, beta, gamma = theta
    A, B, C = np.exp(lA), np.exp(lB), np.exp(lC)
    Pa = ds.P ** -alpha
    x = np.exp(-gamma * ds.log_eta_k)[None, :] * ds.Skt  # (n, K)
    q = 1.0 + C * x
    qb = q ** -beta
    G = 1.0 - qb
    LD = B * (G @ ds.dk) if ds.dk.size else np.zeros(len(ds.P))
    pred = L0 + A * Pa - LD
    if not jac:
        return pred
    J = np.empty((len(pred), 7))
    J[:, 0] = 1.0
    J[:, 1] = A * Pa
    J[:, 2] = -A * Pa * np.log(ds.P)
    J[:, 3] = -LD
    dGdlogx = beta * C * x * qb / q  # dG/dlogC; and dG/dgamma = -log eta_k * this
    J[:, 4] = -B * (dGdlogx @ ds.dk) if ds.dk.size else 0.0
    J[:, 5] = -B * ((qb * np.log(q)) @ ds.dk) if ds.dk.size else 0.0
    J[:, 6] = B * ((dGdlogx * ds.log_eta_k[None, :]) @ ds.dk) if ds.dk.size else 0.0
    return pred, J


def _annealing(theta: np.ndarray, ds: _Design, jac: bool = False):
    L0, lA, alpha, lC = theta
    A, C = np.exp(lA), np.exp(lC)
    Pa = ds.P ** -alpha
    pred = L0 + A * Pa - C * ds.S2
    if not jac:
        return pred
    J = np.column_stack([np.ones_like(pred), A * Pa, -A * Pa * np.log(ds.P), -C * ds.S2])
    return pred, J


_LAWS = {"multi_power": _mpl, "annealing": _annealing}
_LOG = {"multi_power": (1, 3, 4), "annealing": (1, 3)}  # theta entries stored as logs (A, B, C)


def _to_params(form: str, theta: np.ndarray) -> dict[str, float]:
    th = np.array(theta, float)
    th[list(_LOG[form])] = np.exp(th[list(_LOG[form])])
    return dict(zip(PARAMS[form], map(float, th)))


def _to_theta(form: str, params: dict) -> np.ndarray:
    th = np.array([float(params[k]) for k in PARAMS[form]])
    th[list(_LOG[form])] = np.log(th[list(_LOG[form])])
    return th


@public
def predict_schedule_law(form: str, params: dict, lr, steps=None, *, decay_factor: float | None = None,
                         max_terms: int = 400) -> np.ndarray:
    """Loss predicted by a law at `steps` (1-based; default every step) of the per-step schedule `lr`."""
    if form not in FORMS:
        raise AnalysisError(f"predict_schedule_law: form={form!r} must be one of {', '.join(FORMS)}")
    sched = Schedule.from_lr(lr)
    t = np.arange(1, sched.T + 1) if steps is None else np.asarray(steps, int)
    ds = _design(sched, t, max_terms, 0.999 if decay_factor is None else decay_factor)
    return _LAWS[form](_to_theta(form, params), ds)


# ---------------------------------------------------------------- fitting


def curve_schedules(curves: pd.DataFrame, run: str = "run_id", step: str = "step", lr: str = "lr",
                    loss: str = "train_loss", min_frac: float = 0.05, what: str = "curve_schedules") -> dict[str, dict]:
    """Per run: its Schedule (rebuilt per step) and the fitted points (t, loss) after the warmup and after
    the first min_frac of the steps. Runs without finite points are skipped (listed under '_skipped')."""
    require_frame(curves, what)
    require_columns(curves, [run, step, lr, loss], what)
    out: dict[str, dict] = {}
    skipped = []
    for rid, g in curves.groupby(run, sort=True, observed=True):
        s, e, y = numeric(g, step, what), numeric(g, lr, what), numeric(g, loss, what)
        try:
            sched = Schedule.from_lr(per_step_lr(s, e))
        except AnalysisError as err:
            skipped.append(f"{rid} ({err})")
            continue
        ok = np.isfinite(y) & np.isfinite(s) & (s >= 1) & (s > sched.W) & (s >= min_frac * sched.T)
        if ok.sum() < 3:
            skipped.append(f"{rid} ({int(ok.sum())} finite loss point(s) after the warmup)")
            continue
        t = s[ok].astype(int)
        order = np.argsort(t)
        out[str(rid)] = {"schedule": sched, "t": t[order], "loss": y[ok][order]}
    if skipped:
        out["_skipped"] = skipped  # type: ignore[assignment]
    return out


def _starts(form: str, data: list[tuple[_Design, np.ndarray]]) -> list[np.ndarray]:
    """Starts: a variable-projection fit of the annealing law (linear in L0, A, C for each alpha on a grid),
    extended for the multi-power law by a small grid in (C, beta, gamma)."""
    P = np.concatenate([d.P for d, _ in data])
    anneal = np.concatenate([(d.S2 if form == "annealing" else d.drop) for d, _ in data])
    y = np.concatenate([v for _, v in data])
    best = None
    for alpha in np.linspace(0.05, 2.0, 40):
        X = np.column_stack([np.ones_like(P), P**-alpha, -anneal])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        sse = float(np.sum((X @ coef - y) ** 2))
        if coef[1] > 0 and (best is None or sse < best[0]):
            best = (sse, alpha, coef)
    if best is None:
        raise AnalysisError("fit_schedule_law: the loss does not fall with the lr area (no A > 0 start)")
    _, alpha, (L0, A, C) = best
    scale = max(C, 1e-8 * A)  # the annealing multiplier (C of Tissue et al.; B of Luo et al. at G = 1)
    if form == "annealing":
        return [np.array([L0, np.log(A), alpha, np.log(scale)])]
    return [np.array([L0, np.log(A), alpha, np.log(scale), np.log(c), b, g])
            for c in (0.5, 4.0) for b in (0.3, 0.8) for g in (0.3, 0.7)]


_BOUNDS = {"multi_power": ([-np.inf, -30, 0.0, -30, -30, 1e-3, -2.0], [np.inf, 30, 4.0, 30, 30, 10.0, 3.0]),
           "annealing": ([-np.inf, -30, 0.0, -40], [np.inf, 30, 4.0, 30])}


def _solve(form: str, data: list[tuple[_Design, np.ndarray]], starts: list[np.ndarray], max_nfev: int = 300):
    law = _LAWS[form]

    def resid(th):
        return np.concatenate([law(th, d) - y for d, y in data])

    def jac(th):
        return np.vstack([law(th, d, jac=True)[1] for d, _ in data])

    best = None
    lo, hi = _BOUNDS[form]
    for x0 in starts:
        x0 = np.clip(x0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
        with np.errstate(all="ignore"):
            try:
                r = least_squares(resid, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                  max_nfev=max_nfev, xtol=1e-12, ftol=1e-12, gtol=1e-12)
            except ValueError:
                continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    return best


def _block_resample(resid: np.ndarray, rng: np.random.Generator, block: int) -> np.ndarray:
    n = len(resid)
    block = max(1, min(block, n))
    starts = rng.integers(0, n - block + 1, int(np.ceil(n / block)))
    return np.concatenate([resid[s:s + block] for s in starts])[:n]


@public
def fit_schedule_law(curves: pd.DataFrame, form: str = "multi_power", *, train: Sequence[str] | None = None,
                     holdout: Sequence[str] | None = None, run: str = "run_id", step: str = "step", lr: str = "lr",
                     loss: str = "train_loss", decay_factor: float = 0.999, min_frac: float = 0.05,
                     max_terms: int = 400, n_boot: int = 100, level: float = 0.95, seed: int = 0,
                     block_frac: float = 0.1) -> Fit:
    """Fit the multi-power law (form="multi_power") or the LR-annealing law (form="annealing") to the
    curves of the `train` runs (default: every run not in `holdout`) and predict the `holdout` runs.

    Returns a Fit with the law's parameters (bootstrap intervals from a moving-block bootstrap of the
    residuals within each curve), r2 on the fitted points, and details["prediction"]: one row per run
    (role train/holdout, n points, mean and max relative error |L_hat - L| / L, RMSE, final-step
    relative error) and details["prediction_error"]: the mean relative error over the held-out runs.
    A warning says when no schedule is held out (the error on an unseen schedule is then not measured).
    """
    if form not in FORMS:
        raise AnalysisError(f"fit_schedule_law: form={form!r} must be one of {', '.join(FORMS)}")
    what = f"fit_schedule_law({form})"
    per_run = curve_schedules(curves, run, step, lr, loss, min_frac, what)
    skipped = per_run.pop("_skipped", [])
    if not per_run:
        raise AnalysisError(f"{what}: no run has a usable curve ({'; '.join(skipped) or 'no runs'})")
    holdout = [str(h) for h in as_list(holdout)]
    unknown = [h for h in holdout if h not in per_run]
    if unknown:
        raise AnalysisError(f"{what}: held-out run(s) {', '.join(map(repr, unknown))} have no usable curve "
                            f"(usable: {', '.join(per_run)})")
    train = [str(r) for r in as_list(train)] if train is not None else [r for r in per_run if r not in holdout]
    missing = [r for r in train if r not in per_run]
    if missing:
        raise AnalysisError(f"{what}: training run(s) {', '.join(map(repr, missing))} have no usable curve")
    if not train:
        raise AnalysisError(f"{what}: no training runs left after holding out {', '.join(holdout)}")
    designs = {r: (_design(v["schedule"], v["t"], max_terms, decay_factor), v["loss"]) for r, v in per_run.items()}
    data = [designs[r] for r in train]
    n = int(sum(len(y) for _, y in data))
    k = len(PARAMS[form])
    if n < k + 2:
        raise AnalysisError(f"{what}: {n} fitted point(s), need at least {k + 2}")
    best = _solve(form, data, _starts(form, data))
    if best is None:
        raise AnalysisError(f"{what}: the optimiser found no finite solution")
    theta = best.x
    params = _to_params(form, theta)
    y_all = np.concatenate([y for _, y in data])
    pred_all = np.concatenate([_LAWS[form](theta, d) for d, _ in data])
    resid = pred_all - y_all
    ss_tot = float(np.sum((y_all - y_all.mean()) ** 2))
    warnings = [f"skipped run {s}" for s in skipped]
    if not holdout:
        warnings.append("no held-out schedule: the prediction error on an unseen schedule is not measured "
                        "(pass holdout=[run ids])")
    decaying = [r for r in train if designs[r][0].dk.size and designs[r][0].dk.sum() > 0]
    if not decaying:
        warnings.append("no training curve anneals its lr: the annealing terms (" +
                        ("B, C, beta, gamma" if form == "multi_power" else "C") + ") are not identified")
    if len(train) < 2:
        warnings.append("one training curve: parameters rest on a single schedule")
    if not best.success:
        warnings.append(f"the optimiser stopped before converging ({best.message})")
    rows = []
    for r, (d, y) in designs.items():
        p = _LAWS[form](theta, d)
        rel = np.abs(p - y) / np.abs(y)
        rows.append({"run": r, "role": "holdout" if r in holdout else "train" if r in train else "unused",
                     "n": len(y), "mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
                     "rmse": float(np.sqrt(np.mean((p - y) ** 2))), "final_rel_error": float(rel[-1])})
    pred_table = pd.DataFrame(rows)
    held = pred_table[pred_table["role"] == "holdout"]
    fit = Fit(f"schedule_law_{form}", params, objective=float(np.sum(resid**2)), n=n,
              r2=float(1 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else None, warnings=warnings,
              details={"form": _FORMULA[form], "objective": "SSE of the loss", "optimizer": "scipy least_squares "
                       "(trf, analytic Jacobian) from variable-projection starts", "decay_factor": decay_factor,
                       "min_frac": min_frac, "max_terms": max_terms, "train": train, "holdout": holdout,
                       "warmup_steps": {r: int(per_run[r]["schedule"].W) for r in designs},
                       "columns": {"run": run, "step": step, "lr": lr, "loss": loss},
                       "prediction": pred_table,
                       "prediction_error": float(held["mean_rel_error"].mean()) if len(held) else None,
                       "prediction_max_error": float(held["max_rel_error"].max()) if len(held) else None,
                       "residual_sd": float(np.sqrt(np.sum(resid**2) / max(n - k, 1)))})
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        fitted = [_LAWS[form](theta, d) for d, _ in data]
        res_runs = [y - f for (_, y), f in zip(data, fitted)]
        reps = []
        for _ in range(n_boot):
            boot = [(d, f + _block_resample(e, rng, int(np.ceil(block_frac * len(e)))))
                    for (d, _), f, e in zip(data, fitted, res_runs)]
            rb = _solve(form, boot, [theta], max_nfev=100)
            reps.append(_to_params(form, rb.x) if rb is not None else {p: np.nan for p in PARAMS[form]})
        fit.samples = pd.DataFrame(reps)
        fit.ci, fit.se = summarize(fit.samples, level)
        fit.details["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level,
                                    "method": f"moving-block bootstrap of residuals within each curve "
                                              f"(block = {block_frac:.0%} of the curve), refit from the estimate"}
        outside = [p for p, (lo, hi) in fit.ci.items() if np.isfinite(lo) and not lo <= params[p] <= hi]
        if outside:
            fit.warnings.append(f"the bootstrap interval of {', '.join(outside)} excludes the estimate: the residuals "
                                "are structured (the law misfits these curves), read the intervals as rough")
    return fit


_FORMULA = {"multi_power": "L(t) = L0 + A (S1 + S_W)^-alpha - B sum_k (eta_{k-1} - eta_k) (1 - (C eta_k^-gamma "
                           "S_k(t) + 1)^-beta)  (Luo et al. 2025)",
            "annealing": "L(s) = L0 + A S1^-alpha - C S2, S2 = sum m_i, m_i = lambda m_{i-1} + eta_{i-1} - eta_i "
                         "(Tissue et al. 2024)"}


@public
def schedule_law_curves(fit: Fit, curves: pd.DataFrame, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """Observed and predicted loss at every logged step (after warmup and min_frac) of the given runs
    (default: the fit's train and holdout runs): columns run, step, lr, loss, pred, role."""
    form = fit.name.removeprefix("schedule_law_")
    cols = fit.details["columns"]
    per_run = curve_schedules(curves, cols["run"], cols["step"], cols["lr"], cols["loss"], fit.details["min_frac"],
                              "schedule_law_curves")
    per_run.pop("_skipped", None)
    want = [str(r) for r in (runs or fit.details["train"] + fit.details["holdout"])]
    out = []
    for r in want:
        if r not in per_run:
            continue
        v = per_run[r]
        d = _design(v["schedule"], v["t"], fit.details["max_terms"], fit.details["decay_factor"])
        out.append(pd.DataFrame({"run": r, "step": v["t"], "lr": v["schedule"].eta[v["t"] - 1], "loss": v["loss"],
                                 "pred": _LAWS[form](_to_theta(form, fit.params), d),
                                 "role": "holdout" if r in fit.details["holdout"] else "train"}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["run", "step", "lr", "loss", "pred", "role"])

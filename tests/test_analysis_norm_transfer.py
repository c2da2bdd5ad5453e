"""The norm_transfer recipe on synthetic sweeps with a known optimal norm (Filatov et al., arXiv 2510.03871):
horizons (step 0, alignment across batch sizes, bounds, decaying schedules), the parabola window, eta*
interpolation, censored B*, the first-band law, seeds, and the optimal-norm-vs-horizon figure."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import norm_transfer as nt
from analysis import plots
from analysis.errors import AnalysisError
from analysis.recipes import run_recipe
from analysis.recipes_norm import norm_transfer

OPT = 5.0  # log2 of the optimal output norm, the same at every (B, D)
CTX = 64  # tokens per sequence


def log2_norm(log2_lr, B, D):
    """Norm grows with lr x steps: log2 norm = log2 lr + 0.5 log2(D / B) + 1 (monotone in lr)."""
    return log2_lr + 0.5 * (math.log2(D) - math.log2(B)) + 1


def true_log2_lr(B, D):
    """The lr whose norm is the optimal one: log2 eta* = 0.5 log2 B - 0.5 log2 D + OPT - 1."""
    return OPT - 1 - 0.5 * (math.log2(D) - math.log2(B))


def loss_at(u, B, D, curvature=0.05):
    """A parabola in log2 norm near OPT, plus a B* term: log2 B* = 0.5 log2 D - 4.25 (B* = 8, 8, 16, 16, 32 on
    the batch grid 4..64 at D = 2^14 ... 2^18: interior, no ties)."""
    bstar2 = 0.5 * math.log2(D) - 4.25
    return 2 + 40 * 2.0 ** (-math.log2(D) / 8) + curvature * (u - OPT) ** 2 + 0.01 * (math.log2(B) - bstar2) ** 2


def sweep(batches=(4, 8, 16, 32, 64), log2_lrs=tuple(np.arange(-7.0, 1.01, 0.5)), log2_horizons=(14, 15, 16, 17, 18),
          seeds=(0,), step0=True, extra=None, loss_fn=loss_at, noise=0.0, seed_offsets=None, rng_seed=0):
    """(runs, curves) of constant-lr runs over (B, lr[, seed]), one evaluation per horizon (plus step 0).
    extra: {B: [log2 D, ...]} horizons only those batch sizes are evaluated at. seed_offsets: {seed: (d log2
    norm, d loss)} to make seeds differ."""
    rng = np.random.default_rng(rng_seed)
    runs, rows = [], []
    for s in seeds:
        du, dl = (seed_offsets or {}).get(s, (0.0, 0.0))
        for B in batches:
            for lr2 in log2_lrs:
                rid = f"B{B}-lr{lr2:+.2f}-s{s}"
                runs.append({"run_id": rid, "state": "done", "optim.lr": 2.0**lr2, "run.batch_size": B, "run.seed": s,
                             "run.schedule": "constant"})
                if step0:
                    rows.append({"run_id": rid, "step": 0, "tokens": 0, "val_loss": 5.5, "norm/param/output": 1.0})
                for h in sorted(list(log2_horizons) + list((extra or {}).get(B, []))):
                    D = 2.0**h
                    u = log2_norm(lr2, B, D) + du
                    rows.append({"run_id": rid, "step": int(D // (B * CTX)), "tokens": int(D),
                                 "val_loss": loss_fn(u - du, B, D) + dl + noise * rng.standard_normal(),
                                 "norm/param/output": 2.0**u})
    return pd.DataFrame(runs), pd.DataFrame(rows)


def run(runs, curves, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return norm_transfer(runs, curves, None, n_boot=50, **options)


# --- 1. horizons: step 0, bounds, options --------------------------------------------------------------------

def test_the_step_zero_row_is_no_horizon_and_b_star_is_fitted():
    res = run(*sweep())
    assert (res["optima"]["D"] > 0).all() and (res["per_horizon"]["D"] > 0).all()
    assert any("D <= 0" in w and "step-0" in w for w in res["warnings"])
    assert not any("non-positive" in w for w in res["warnings"])
    bstar = res["fits"]["bstar"]
    assert bstar is not None and abs(bstar["params"]["b"] - 0.5) < 1e-6  # B* on the grid: 8, 8, 16, 16, 32
    assert not any("2^-inf" in str(r["D"]) for r in res["summary"])
    assert abs(res["optimal_norm"]["log2_norm_mean"] - OPT) < 0.02


def test_the_horizons_option_bounds_the_horizons():
    runs, curves = sweep()
    res = run(runs, curves, horizons=[2**15, 2**17])
    assert sorted(res["optima"]["D"].unique()) == [2.0**15, 2.0**16, 2.0**17]
    res = run(runs, curves, horizons=[2**16, None])
    assert res["optima"]["D"].min() == 2.0**16
    with pytest.raises(AnalysisError, match="horizons"):
        run(runs, curves, horizons=2**16)
    with pytest.raises(AnalysisError, match=r"horizons=\[.*\] leaves no horizon"):
        run(runs, curves, horizons=[2**30, 2**31])


def test_an_unknown_option_lists_the_valid_ones():
    runs, curves = sweep(batches=(8, 16), log2_horizons=(16,))
    with pytest.raises(AnalysisError, match="windw") as info:
        run_recipe("norm_transfer", runs, curves, None, windw=1.0)
    for name in ("window", "horizons", "min_batches", "seed_columns", "n_boot"):
        assert name in str(info.value)


# --- 2. horizons evaluated for one batch size -------------------------------------------------------------------

def test_horizons_not_evaluated_for_every_batch_size_are_dropped_and_named():
    runs, curves = sweep(extra={4: [12, 13], 8: [13]})  # 2^12: B=4 only; 2^13: B=4 and 8
    res = run(runs, curves)
    assert res["per_horizon"]["D"].min() == 2.0**14 and res["optima"]["D"].min() == 2.0**14
    msg = next(w for w in res["warnings"] if "do not line up" in w)
    assert "2^12" in msg and "2^13" in msg and "B=4, 8" in msg
    res = run(runs, curves, min_batches=2)  # 2^13 has two batch sizes, 2^12 one
    assert res["per_horizon"]["D"].min() == 2.0**13
    with pytest.raises(AnalysisError, match="min_batches"):
        run(runs, curves, min_batches=0)


# --- 3. the parabola window -----------------------------------------------------------------------------------

def undertrained_loss(u, B, D):
    """Parabolic within 1 octave of OPT, much steeper beyond it on the low-norm (undertrained) side."""
    return loss_at(u, B, D) + 0.3 * max(0.0, OPT - 1 - u) ** 2


def test_the_parabola_uses_the_points_near_the_minimum():
    # 8 lrs per (B, D): log2 norm 2.1 ... 5.6, the optimum (5.0) between grid points, 3 points more than an
    # octave below it on the steep side
    runs, curves = sweep(batches=(16,), log2_horizons=(16,), log2_lrs=tuple(np.arange(-4.9, -1.35, 0.5)),
                         loss_fn=undertrained_loss, step0=False)
    table = curves.merge(runs).rename(columns={"val_loss": "loss", "norm/param/output": "output_norm",
                                               "optim.lr": "lr", "run.batch_size": "B", "tokens": "D"})
    opt = nt.optimal_norms(table, by=["B", "D"], n_boot=0).iloc[0]
    assert abs(opt["log2_norm_opt"] - OPT) < 0.01  # exact: every fitted point is on the parabola
    assert 3 <= opt["n_points"] <= 5 and opt["n_lrs"] == 8
    assert not opt["below_observed"]


def test_a_fitted_minimum_below_every_observed_loss_is_reported():
    runs, curves = sweep(batches=(8, 16), log2_horizons=(16,), loss_fn=undertrained_loss)
    res = run(runs, curves, window=10.0)  # every point fitted: the steep side drags the parabola down
    assert res["optima"]["below_observed"].all()
    assert any("below every observed loss" in w for w in res["warnings"])
    assert not run(runs, curves)["optima"]["below_observed"].any()
    assert "points" in res["summary"][0] and res["summary"][0]["points"] == res["per_horizon"]["n_points"].iloc[0]


# --- 4. censored B* -----------------------------------------------------------------------------------------

def _per_with_censored_ends():
    d = 2.0 ** np.arange(12, 20)
    b = 2.0 ** (0.5 * np.log2(d) - 4)  # 4 ... 45
    edge = np.array([True, True, False, False, False, False, False, True])
    b[:2], b[-1] = 16.0, 16.0  # what a batch grid 16..32 reports at its edges: bounds
    return pd.DataFrame({"D": d, "B_opt": b, "b_at_edge": edge})


def test_fit_bstar_leaves_censored_b_star_out():
    per = _per_with_censored_ends()
    fit = nt.fit_bstar(per, n_boot=50)
    assert abs(fit["b"] - 0.5) < 1e-9 and fit.details["censored_horizons"] == 3
    assert any("left out (censored)" in w for w in fit.warnings)
    with pytest.raises(AnalysisError, match="interior B"):
        nt.fit_bstar(per.assign(b_at_edge=[True] * 6 + [False] * 2), n_boot=0)


def test_the_b_star_line_spans_only_the_fitted_points():
    per = _per_with_censored_ends()
    fig = plots.plot_bstar(per, fit=nt.fit_bstar(per, n_boot=0))
    line = next(ln for ln in fig.get_axes()[0].get_lines() if ln.get_label().startswith("B* ∝"))
    fitted = per.loc[~per["b_at_edge"], "D"]
    assert np.isclose(min(line.get_xdata()), fitted.min()) and np.isclose(max(line.get_xdata()), fitted.max())


# --- 5. eta* interpolated ------------------------------------------------------------------------------------

def test_eta_star_is_interpolated_between_grid_points():
    # a coarse grid (one octave per lr) whose points miss eta* by up to half an octave
    runs, curves = sweep(log2_lrs=tuple(np.arange(-8.0, 3.0, 1.0)), step0=False)
    res = run(runs, curves)
    opt = res["optima"]
    truth = np.array([true_log2_lr(b, d) for b, d in zip(opt["B"], opt["D"])])
    assert np.abs(np.log2(opt["lr_opt"]) - truth).max() < 0.02
    grid = np.log2(opt["lr_grid"])
    assert np.allclose(grid, np.round(grid)) and np.abs(grid - truth).max() > 0.2  # the grid value misses
    joint = res["fits"]["lr_joint"]["params"]
    assert abs(joint["B"] - 0.5) < 0.02 and abs(joint["D"] + 0.5) < 0.02


def test_interpolate_lr_inverts_the_norm_between_the_bracketing_lrs():
    log2_lr = np.array([-4.0, -3.0, -2.0, -1.0])
    u = np.array([3.0, 4.0, 4.5, 6.0])
    assert nt.interpolate_lr(log2_lr, u, 4.25) == pytest.approx(-2.5)
    assert nt.interpolate_lr(log2_lr, u, 5.0) == pytest.approx(-2.0 + 0.5 / 1.5)
    assert nt.interpolate_lr(log2_lr, u, 7.0) == -1.0  # no bracket: the nearest grid lr


# --- 6. the first-band law ---------------------------------------------------------------------------------

def test_first_band_horizon_interpolates_the_crossing_and_censors_early_runs():
    rows = []
    for name, lr2 in (("slow", -3.0), ("fast", 1.5), ("never", -9.0)):
        for h in range(10, 19):  # evaluations one octave apart
            rows.append({"run_id": name, "B": 16, "lr": 2.0**lr2, "D": 2.0**h,
                         "output_norm": 2.0 ** log2_norm(lr2, 16, 2.0**h)})
    first = nt.first_band_horizon(pd.DataFrame(rows), band=(4.8, 5.2)).set_index("run_id")
    # log2 norm = -3 + 0.5 (log2 D - 4) + 1 reaches 4.8 at log2 D = 17.6, between evaluations 2^17 and 2^18
    assert math.log2(first.loc["slow", "D_first"]) == pytest.approx(17.6)
    assert first.loc["slow", "status"] == "crossed"
    assert first.loc["fast", "status"] == "censored" and np.isnan(first.loc["fast", "D_first"])  # above at 2^10
    assert first.loc["never", "status"] == "never"


def test_a_zero_width_interval_is_reported():
    first = pd.DataFrame({"B": [8, 16, 32, 8, 16, 32], "D_first": 2.0 ** np.array([14, 15, 16, 15, 16, 17.0])})
    first["lr"] = 2.0 ** (1.5 * np.log2(first["B"]) - np.log2(first["D_first"]) + 10)  # exact: every replicate agrees
    fit = nt.fit_first_band(first, n_boot=50)
    assert any("zero width" in w for w in fit.warnings)


def test_the_band_centre_comes_from_the_cleaned_optima():
    res = run(*sweep())
    centre = float(np.mean(res["band"]))
    assert abs(centre - OPT) < 0.02  # no D = 0 optimum (log2 norm 0) dragging it down
    fb = res["fits"]["first_band"]
    assert fb is not None and fb["details"]["runs_censored"] >= 1
    # the crossing of log2 norm = log2 lr + 0.5 log2(D / B) + 1 at the band's edge: log2 lr = 0.5 log2 B - 0.5 log2 D
    assert abs(fb["params"]["D_first"] + 0.5) < 0.01 and abs(fb["params"]["B"] - 0.5) < 0.01


# --- 7. seeds ------------------------------------------------------------------------------------------------

def test_losses_are_averaged_over_seeds_and_intervals_resample_seeds():
    offsets = {0: (-0.15, 0.0), 1: (0.15, 0.02), 2: (0.0, -0.01), 3: (0.05, 0.01)}
    runs, curves = sweep(batches=(8, 16, 32), log2_horizons=(15, 16, 17), seeds=(0, 1, 2, 3), seed_offsets=offsets,
                         noise=0.002)
    res = run(runs, curves)
    opt = res["optima"]
    assert (opt["n_seeds"] == 4).all() and (opt["interval"] == "bootstrap over seeds").all()
    assert np.abs(opt["log2_norm_opt"] - (OPT + np.mean([u for u, _ in offsets.values()]))).max() < 0.1
    assert ((opt["log2_norm_lo"] < opt["log2_norm_opt"]) & (opt["log2_norm_opt"] < opt["log2_norm_hi"])).all()
    assert res["summary"][0]["seeds"] == 4
    one = run(*sweep(batches=(8, 16, 32), log2_horizons=(15, 16, 17)))["optima"]
    assert (one["n_seeds"] == 1).all() and (one["interval"] != "bootstrap over seeds").all()


# --- 8. the optimal norm vs horizon figure ---------------------------------------------------------------------

def test_the_optimal_norm_vs_horizon_figure(tmp_path):
    runs, curves = sweep()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = norm_transfer(runs, curves, tmp_path, n_boot=50)
    assert "optimal_norm_vs_horizon.png" in res["figures"]
    assert (tmp_path / "optimal_norm_vs_horizon.png").stat().st_size > 1000
    fig = plots.plot_optimal_norm_vs_horizon(res["optima"], per_horizon=res["per_horizon"])
    ax = fig.get_axes()[0]
    per_b = [ln for ln in ax.get_lines() if ln.get_label().startswith("B = ")]
    assert len(per_b) == 5 and ax.get_xscale() == "log" and ax.xaxis._scale.base == 2
    assert len(ax.containers) >= 5  # error bars per batch size


def test_loss_vs_norm_has_one_panel_per_horizon_with_each_batch_optimum(tmp_path):
    """The paper's Figs. 1a/2a: a panel per horizon, every (lr, B) point coloured by lr, a star per B."""
    runs, curves = sweep()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = norm_transfer(runs, curves, tmp_path, n_boot=50)
    assert (tmp_path / "loss_vs_norm_per_horizon.png").stat().st_size > 1000
    table = res["optima"]
    horizons = sorted(table["D"].unique())
    fig = plots.plot_loss_vs_norm_per_horizon(
        pd.DataFrame({"B": table["B"], "D": table["D"], "lr": table["lr_opt"], "loss": table["loss_opt"],
                      "output_norm": table["norm_opt"], "seed": "0"}), table, per_horizon=res["per_horizon"])
    panels = [ax for ax in fig.get_axes() if ax.get_title().startswith("D = ")]
    assert len(panels) == len(horizons)
    for ax, D in zip(panels, horizons):
        stars = sum(len(c.get_offsets()) for c in ax.collections if c.get_label() == "optimum per B")
        assert stars == int(((table["D"] == D) & table["ok"]).sum())


# --- 9. decaying schedules -----------------------------------------------------------------------------------

def cosine_sweep(batches=(4, 8, 16, 32, 64), log2_lrs=tuple(np.arange(-7.0, 1.01, 0.5)), log2_horizons=(14, 16, 18)):
    """Each (B, D, lr) its own cosine run; evaluations at D/4 and D/2 too, which are no horizon (mid-decay)."""
    runs, rows = [], []
    for B in batches:
        for h in log2_horizons:
            for lr2 in log2_lrs:
                rid = f"cos-B{B}-D{h}-lr{lr2:+.2f}"
                runs.append({"run_id": rid, "state": "done", "optim.lr": 2.0**lr2, "run.batch_size": B, "run.seed": 0,
                             "run.schedule": "cosine"})
                rows.append({"run_id": rid, "step": 0, "tokens": 0, "val_loss": 5.5, "norm/param/output": 1.0})
                for frac in (0.25, 0.5):  # mid-decay: a worse loss at a norm that is not the final one
                    D = 2.0**h * frac
                    rows.append({"run_id": rid, "step": int(D // (B * CTX)), "tokens": int(D), "val_loss": 4.0 + lr2,
                                 "norm/param/output": 2.0 ** (log2_norm(lr2, B, D) - 1)})
                D = 2.0**h
                u = log2_norm(lr2, B, D)
                rows.append({"run_id": rid, "step": int(D // (B * CTX)), "tokens": int(D), "val_loss": loss_at(u, B, D),
                             "norm/param/output": 2.0**u})
    return pd.DataFrame(runs), pd.DataFrame(rows)


def test_a_decaying_run_is_a_horizon_only_at_its_end():
    runs, curves = cosine_sweep()
    res = run(runs, curves)
    assert sorted(res["optima"]["D"].unique()) == [2.0**14, 2.0**16, 2.0**18]
    assert np.abs(res["optima"]["log2_norm_opt"] - OPT).max() < 0.02
    assert any("decaying schedule (cosine)" in w for w in res["warnings"])
    assert res["fits"]["lr_joint"] is not None and res["fits"]["first_band"] is None  # no constant-lr run
    # a diverged cosine run stopped before its length: it is no horizon
    diverged = runs.assign(state=np.where(runs["run_id"] == runs["run_id"].iloc[0], "diverged", "done"))
    res = run(diverged, curves)
    assert res["optima"]["n_lrs"].min() == len(np.arange(-7.0, 1.01, 0.5)) - 1

"""Scaling-law fitters on synthetic data with known answers: IsoFLOP (Approach 2) and the frontier
(Approach 1), StepLaw and DeepSeek lr/batch laws, critical batch size, optimizer speedup, norm transfer."""

import numpy as np
import pandas as pd
import pytest

from analysis import norm_transfer as nt
from analysis.critical_batch import b_simple, fit_critical_batch, steps_to_target
from analysis.errors import AnalysisError
from analysis.hyperlaws import fit_deepseek, fit_steplaw, near_optimal
from analysis.isoflop import BIAS_WARNING, fit_approach2, frontier
from analysis.speedup import optimizer_speedup
from analysis.synthetic import chinchilla_points, norm_sweep_table


def test_approach2_recovers_symmetric_exponent_and_warns():
    params = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.34}  # alpha = beta: parabola unbiased
    df = chinchilla_points(params, per_budget=9, noise=0.002, seed=0)
    table, fit = fit_approach2(df, n_boot=300)
    assert table["ok"].all()
    assert abs(fit["N_exponent"] - 0.5) < 0.03 and abs(fit["N_exponent"] + fit["D_exponent"] - 1) < 1e-9
    assert BIAS_WARNING in fit.warnings


def test_approach2_excludes_budgets_with_edge_vertices():
    params = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.34}
    df = chinchilla_points(params, per_budget=9, noise=0.0)
    first = df["C"] == df["C"].min()
    n_opt = df.loc[first, "N"].median()
    df = df[~first | (df["N"] > n_opt * 1.5)]  # this budget only samples above its optimum
    table, fit = fit_approach2(df, n_boot=100)
    assert not table.iloc[0]["ok"] and table["ok"].iloc[1:].all()
    assert any("excluded" in w for w in fit.warnings)


def test_frontier_picks_larger_models_at_larger_compute():
    p = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
    rows = []
    for N in np.geomspace(1e7, 1e10, 7):
        for D in np.geomspace(1e8, 1e12, 40):
            rows.append({"run_id": f"N{N:.0e}", "N": N, "tokens": D,
                         "loss": p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]})
    fr = frontier(pd.DataFrame(rows), n_grid=25)
    interior = fr[~fr["at_edge"]]
    assert len(interior) >= 5
    assert np.all(np.diff(fr["N_opt"].to_numpy()) >= 0)  # the optimal size never shrinks with compute


def _lr_batch_grid(keys, lr_star, b_star, base_loss, rng):
    rows = []
    for key in keys:
        l2lr, l2b = np.log2(lr_star(*key)), np.log2(b_star(*key))
        for x in np.arange(-16, 2, 0.25):
            for bb in np.arange(4, 26, 0.5):
                loss = base_loss(*key) * (1 + 0.004 * (x - l2lr) ** 2 + 0.002 * (bb - l2b) ** 2)
                rows.append(dict(zip(("k1", "k2"), key)) | {"lr": 2.0**x, "batch": 2.0**bb, "loss": loss})
    return pd.DataFrame(rows)


def test_steplaw_recovers_exponents_from_near_optimal_runs():
    rng = np.random.default_rng(0)
    keys = [(n, d) for n in np.geomspace(1e7, 1e9, 3) for d in np.geomspace(1e9, 1e11, 3)]
    df = _lr_batch_grid(keys, lambda n, d: 1.79 * n**-0.713 * d**0.307, lambda n, d: 0.58 * d**0.571,
                        lambda n, d: 2 + 1e3 * n**-0.3, rng).rename(columns={"k1": "N", "k2": "D"})
    fits = fit_steplaw(df, "lr", "batch", "N", "D", "loss", n_boot=200)
    assert abs(fits["lr"]["N"] + 0.713) < 0.05 and abs(fits["lr"]["D"] - 0.307) < 0.05
    assert abs(fits["batch"]["b"] - 0.571) < 0.05
    assert fits["lr"].details["n_groups"] == 9
    kept = near_optimal(df, "loss", ["N", "D"], 0.0025)
    assert (kept["rel_gap"] < 0.0025).all() and kept.groupby(["N", "D"])["is_best"].any().all()


def test_deepseek_recovers_compute_exponents():
    rng = np.random.default_rng(1)
    keys = [(c, 0) for c in np.geomspace(1e17, 1e20, 5)]
    df = _lr_batch_grid(keys, lambda c, _: 0.3118 * c**-0.125, lambda c, _: 0.292 * c**0.3271,
                        lambda c, _: 2 + 1e2 * c**-0.1, rng).rename(columns={"k1": "C"})
    fits = fit_deepseek(df, "lr", "batch", "C", "loss", n_boot=200)
    assert abs(fits["lr"]["b"] + 0.125) < 0.03 and abs(fits["batch"]["b"] - 0.3271) < 0.03


def test_critical_batch_recovers_b_noise():
    rng = np.random.default_rng(2)
    B = 2.0 ** np.arange(3, 12)
    S = 1000 * (1 + 256 / B) * np.exp(0.02 * rng.standard_normal(B.size))
    fit = fit_critical_batch(pd.DataFrame({"B": B, "steps": S}), n_boot=500)
    assert abs(fit["B_noise"] / 256 - 1) < 0.1 and abs(fit["S_min"] / 1000 - 1) < 0.1
    assert fit.ci["B_noise"][0] < 256 < fit.ci["B_noise"][1]
    assert np.isclose(fit["CBS_zhang"], 1.2 * 8 + fit["b"] / (5 * fit["a"]))
    curves = pd.DataFrame({"run_id": ["a"] * 4, "step": [10, 100, 1000, 10000], "val_loss": [5, 4, 3, 2.5]})
    st = steps_to_target(curves, 3.5)
    assert np.isclose(st["steps"].iloc[0], np.sqrt(100 * 1000))  # halfway between 4 and 3, in log step
    assert not steps_to_target(curves, 1.0)["reached"].iloc[0]
    # McCandlish's two-batch estimator recovers B_simple = tr(Sigma) / |G|^2 exactly without noise
    G2, tr = 4.0, 400.0
    bs, g2, trs = b_simple(G2 + tr / 32, G2 + tr / 512, 32, 512)
    assert np.isclose(bs[0], 100.0) and np.isclose(g2[0], G2) and np.isclose(trs[0], tr)


def test_optimizer_speedup_recovers_data_multiple():
    rng = np.random.default_rng(3)
    rows = []
    for size in (130e6, 520e6):
        for s in range(3):
            for k in (1.0, 2.0, 4.0, 8.0):
                base = lambda kk: 0.5 * kk**-0.3 + 3.0 - 0.2 * (size > 2e8)  # noqa: E731
                for opt, mult in (("adamw", 1.0), ("muon", 1.4)):  # muon needs 1/1.4 of the data
                    rows.append({"size": size, "optimizer": opt, "k": k,
                                 "loss": base(mult * k) + 0.001 * rng.standard_normal()})
    table, fits = optimizer_speedup(pd.DataFrame(rows), by="size", n_boot=300)
    assert len(fits) == 2 and len(table) == 8
    assert table["speedup"].between(1.25, 1.55).all()
    assert ((table["speedup_lo"] < 1.4) & (table["speedup_hi"] > 1.4)).mean() >= 0.75
    # a loss below the baseline's asymptote has no finite equivalent data multiple
    rows.append({"size": 130e6, "optimizer": "magic", "k": 1.0, "loss": 2.0})
    table, _ = optimizer_speedup(pd.DataFrame(rows), by="size", n_boot=0)
    magic = table[table["optimizer"] == "magic"].iloc[0]
    assert magic["beyond_asymptote"] and np.isinf(magic["speedup"])
    with pytest.raises(AnalysisError, match="no 'sgd' rows"):
        optimizer_speedup(pd.DataFrame(rows), baseline="sgd")


def test_norm_transfer_pipeline_recovers_the_optimal_norm_and_laws():
    table = norm_sweep_table(noise=0.001)
    opt = nt.optimal_norms(table, by=["B", "D"], n_boot=100)
    interior = opt[opt["ok"]]
    assert len(interior) >= 0.8 * len(opt)
    assert np.all(np.abs(interior["log2_norm_opt"] - 7.0) < 0.15)
    per = nt.norm_per_horizon(opt)
    summary = nt.norm_transfer_summary(per)
    assert abs(summary["log2_norm_mean"] - 7.0) < 0.1 and summary["log2_norm_sd"] < 0.1  # transfer: constant
    assert summary["mean_ci"][0] <= summary["log2_norm_mean"] <= summary["mean_ci"][1]
    joint = nt.fit_lr_joint(opt, n_boot=300)
    assert abs(joint["B"] - 0.5) < 0.1 and abs(joint["D"] + 0.5) < 0.1
    bstar = nt.fit_bstar(per, n_boot=300)
    assert 0.3 < bstar["b"] < 0.7
    assert np.all(np.diff(per["B_opt"].to_numpy()) >= 0)
    first = nt.first_band_horizon(table, band=(6.8, 7.2))
    fb = nt.fit_first_band(first, n_boot=300)
    assert fb["D_first"] < 0 and fb["B"] > 0


def test_optimal_norm_with_fixed_intercept():
    table = norm_sweep_table(log2_horizons=(24,), batches=(64,), noise=0.0)
    free = nt.optimal_norms(table, by=["B", "D"], n_boot=0).iloc[0]
    loss0 = float(table.sort_values("output_norm")["loss"].iloc[0])
    fixed = nt.optimal_norms(table, by=["B", "D"], intercept=loss0 + 10, n_boot=0).iloc[0]
    assert abs(free["log2_norm_opt"] - 7.0) < 0.05
    assert fixed["coef_c"] == loss0 + 10 and fixed["log2_norm_opt"] != free["log2_norm_opt"]


def test_at_horizons_merges_train_and_eval_lines_of_a_step():
    curves = pd.DataFrame({"run_id": ["a"] * 4, "tokens": [100, 100, 200, 200],
                           "val_loss": [np.nan, 3.0, np.nan, 2.5], "norm/param/output": [4.0, np.nan, 8.0, np.nan]})
    runs = pd.DataFrame({"run_id": ["a"], "optim.lr": [0.01]})
    t = nt.at_horizons(curves, runs, ["val_loss", "norm/param/output"], ["optim.lr"])
    assert t[["tokens", "val_loss", "norm/param/output", "optim.lr"]].values.tolist() == [[100, 3.0, 4.0, 0.01],
                                                                                        [200, 2.5, 8.0, 0.01]]

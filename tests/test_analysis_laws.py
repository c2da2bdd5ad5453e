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
    assert np.isclose(fit["CBS_zhang"], 1.2 * 256 + fit["b"] / (5 * fit["a"]))  # B0 = 256, the paper's
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
        optimizer_speedup(pd.DataFrame(rows), baseline="sgd", by="size")


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


# ---------------------------------------------------------------- issue 13: silent failures on published sweeps

SYMMETRIC = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.34}


def _with_flat_budget():
    """Five IsoFLOP budgets of 5 sizes; the largest samples only a factor 1.6 either side of its optimum, so
    under noise its bootstrap parabolas open almost flat and their vertices wander off the sampled range."""
    df = chinchilla_points(SYMMETRIC, per_budget=5, noise=0.003, seed=1)
    last = df["C"] == df["C"].max()
    n_opt = df.loc[last, "N"].median()
    flat = chinchilla_points(SYMMETRIC, budgets=[df["C"].max()], n_grid=np.geomspace(n_opt / 1.6, n_opt * 1.6, 5),
                             noise=0.003, seed=5)
    return pd.concat([df[~last], flat], ignore_index=True)


def test_approach2_keeps_a_budget_with_wandering_bootstrap_vertices_out_of_the_law():
    import warnings

    df = _with_flat_budget()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # said in the fit's warnings, not by numpy
        table, fit = fit_approach2(df, n_boot=500)
    flat = table.iloc[-1]
    assert flat["convex"] and flat["interior"] and min(flat["n_left"], flat["n_right"]) >= 2  # passes the old checks
    assert flat["boot_outside"] > 0.1 and not flat["stable"] and not flat["ok"]
    assert table["ok"].iloc[:-1].all() and fit.n == 4 and fit.details["budgets_excluded"] == [1e21]
    assert any(w.startswith("budget C=1e+21 excluded") and "bootstrap parabolas" in w for w in fit.warnings)
    lo, hi = fit.ci["N_exponent"]
    assert lo < 0.5 < hi and hi - lo < 0.1
    assert list(fit.samples.columns) == ["N_coef", "N_exponent", "D_coef", "D_exponent"] and len(fit.samples) == 500
    total = (fit.samples["N_exponent"] + fit.samples["D_exponent"]).dropna()  # D = C / 6N, replicate by replicate
    assert len(total) > 450 and np.allclose(total, 1)
    _, kept = fit_approach2(df, n_boot=500, exclude_unstable=False)  # on request it stays in, said plainly
    assert kept.n == 5 and any("kept (exclude_unstable=False)" in w for w in kept.warnings)


def test_approach2_says_when_its_interval_spans_many_decades():
    df = chinchilla_points(SYMMETRIC, budgets=[1e18, 1.3e18, 1.7e18], per_budget=5, noise=0.01, seed=3)
    table, fit = fit_approach2(df, n_boot=500)
    assert table["ok"].all()
    lo, hi = fit.ci["N_exponent"]
    clo, chi = fit.ci["N_coef"]
    assert hi - lo > 1 and np.log10(chi / clo) > 10  # three budgets within a factor 1.7 do not determine the law
    assert any(w.startswith("the law is not determined by these budgets") for w in fit.warnings)


# Zhang et al. 2024 (arXiv 2410.21676), the authors' analysis notebook (github.com/hlzhang109/critical-batch-size,
# plots/chinchilla.ipynb, MIT): steps to the target loss at batch sizes 64..16384 (sequences of 512 tokens) per
# model size, and the critical batch sizes the paper reports from them.
ZHANG_BATCHES = [2**i for i in range(6, 15)]
ZHANG_STEPS = {"85M": [46000, 23000, 13282, 7000, 3840, 2528, 1917, 1600, 1600],
               "151M": [96000, 49000, 24000, 12000, 7128, 4350, 2940, 2400, 2300],
               "302M": [196000, 90000, 46000, 23400, 13300, 7224, 4980, 3400, 2879],
               "604M": [311000, 166000, 81000, 37440, 21320, 11400, 7199, 4700, 3800],
               "1.2B": [642000, 331000, 176000, 94000, 46500, 25000, 15360, 8900, 6500]}
ZHANG_CBS = {"85M": 745.320, "151M": 955.158, "302M": 1393.727, "604M": 1888.522, "1.2B": 2533.411}


def _zhang_rows():
    return pd.DataFrame([{"model": m, "B": b, "steps": s} for m, steps in ZHANG_STEPS.items()
                         for b, s in zip(ZHANG_BATCHES, steps)])


def test_critical_batch_reproduces_zhang_et_al_published_values():
    fits = fit_critical_batch(_zhang_rows(), by="model", n_boot=0)
    assert set(fits) == {f"model={m}" for m in ZHANG_CBS}
    for m, cbs in ZHANG_CBS.items():
        f = fits[f"model={m}"]
        assert abs(f["CBS_zhang"] / cbs - 1) < 1e-4, m
        assert f.details["B0"] == 256 and not f.warnings
    # the published formula on a table built from it: steps = a + b/B with the paper's fit for 85M
    a, b = 1293.8268694659337, 2834258.0888740215
    table = pd.DataFrame({"B": ZHANG_BATCHES, "steps": [a + b / B for B in ZHANG_BATCHES]})
    f = fit_critical_batch(table, n_boot=0)
    assert np.isclose(f["a"], a, rtol=1e-6) and np.isclose(f["CBS_zhang"], 1.2 * 256 + b / (5 * a), rtol=1e-6)
    assert abs(f["CBS_zhang"] / ZHANG_CBS["85M"] - 1) < 1e-6
    # B0 = the smallest batch (the old default) is 9-31 % below the paper on its own data
    low = fit_critical_batch(_zhang_rows(), by="model", b0=None, n_boot=0)
    gaps = [1 - low[f"model={m}"]["CBS_zhang"] / cbs for m, cbs in ZHANG_CBS.items()]
    assert 0.08 < min(gaps) and max(gaps) < 0.32


def test_pooled_model_sizes_are_warned_about_not_fitted_silently():
    from analysis.errors import AnalysisWarning

    pooled = fit_critical_batch(_zhang_rows(), n_boot=0)  # five model sizes as one fit
    assert pooled.r2 < 0.8
    assert any("repeat at different 'steps'" in w and "pass by='model'" in w for w in pooled.warnings)
    seeds = _zhang_rows()[lambda d: d["model"].isin(["85M", "151M"])].assign(seed=lambda d: d["model"])
    assert not any("repeat" in w for w in fit_critical_batch(seeds.drop(columns="model"), seed_col="seed",
                                                             n_boot=0).warnings)
    rows = []
    for size, shift in ((130e6, 0.0), (520e6, -0.2)):
        for k in (1.0, 2.0, 4.0, 8.0):
            for opt, mult in (("adamw", 1.0), ("muon", 1.4)):
                rows.append({"size": size, "optimizer": opt, "k": k, "loss": 0.5 * (mult * k) ** -0.3 + 3.0 + shift})
    with pytest.warns(AnalysisWarning, match=r"optimizer, k repeat at different 'loss'.*pass by='size'"):
        optimizer_speedup(pd.DataFrame(rows), n_boot=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)
        table, _ = optimizer_speedup(pd.DataFrame(rows), by="size", n_boot=0)  # grouped: silent, and right
    assert np.allclose(table["speedup"], 1.4, rtol=1e-3)


def _one_run_per_cell(shift=0.0):
    """One run per (optimizer, k), losses rounded to 0.001 as in a published table; muon needs 1/1.4 of the data."""
    rows = []
    for k in (1.0, 2.0, 4.0, 8.0):
        for opt, mult in (("adamw", 1.0), ("muon", 1.4)):
            loss = round(0.5 * (mult * k) ** -0.3 + 3.0, 3) + (shift if (opt, k) == ("muon", 4.0) else 0.0)
            rows.append({"optimizer": opt, "k": k, "loss": loss})
    return pd.DataFrame(rows)


def test_speedup_interval_includes_the_compared_optimizers_noise():
    speed = lambda shift: optimizer_speedup(_one_run_per_cell(shift), n_boot=0)[0].set_index("k")  # noqa: E731
    moved = [speed(s).loc[4.0, "speedup"] for s in (-0.0005, 0.0005)]  # the table's rounding moves it this much
    table, fits = optimizer_speedup(_one_run_per_cell(), loss_noise=0.0005, n_boot=1000)
    row = table.set_index("k").loc[4.0]
    assert row["speedup_lo"] < min(moved) and max(moved) < row["speedup_hi"]
    assert row["interval"].startswith("conditional on loss_noise=0.0005")
    assert any("conditional on a loss noise of sd 0.0005" in w for w in fits["all"].warnings)
    exact, fits = optimizer_speedup(_one_run_per_cell(), n_boot=1000)  # no noise given: says it is conditional
    assert any("conditional on the compared losses being exact" in w for w in fits["all"].warnings)
    # with seeds the compared side's spread comes from them, and nothing is conditional
    rng = np.random.default_rng(0)
    seeded = pd.concat([_one_run_per_cell().assign(seed=s, loss=lambda d: d["loss"] + 5e-4 * rng.normal(size=len(d)))
                        for s in range(4)], ignore_index=True)
    table, fits = optimizer_speedup(seeded, seed_col="seed", n_boot=1000)
    assert (table["n_runs"] == 4).all() and table["interval"].str.startswith("bootstrap over 4 seeds").all()
    assert not any("conditional" in w for w in fits["all"].warnings)
    w = table.set_index("k").loc[4.0]
    assert w["speedup_hi"] - w["speedup_lo"] > 0.5 * (max(moved) - min(moved))


def test_steplaw_returns_prefactors_and_refuses_an_exponent_over_no_range():
    rng = np.random.default_rng(0)
    keys = [(n, d) for n in np.geomspace(1e7, 1e9, 3) for d in np.geomspace(1e9, 1e11, 3)]
    df = _lr_batch_grid(keys, lambda n, d: 1.79 * n**-0.713 * d**0.307, lambda n, d: 0.58 * d**0.571,
                        lambda n, d: 2 + 1e3 * n**-0.3, rng).rename(columns={"k1": "N", "k2": "D"})
    fits = fit_steplaw(df, "lr", "batch", "N", "D", "loss", n_boot=200)
    lr, batch = fits["lr"], fits["batch"]
    assert set(lr.params) == {"a", "N", "D"} and set(batch.params) == {"a", "b"}  # both prefactors, named alike
    assert np.isclose(lr["a"], np.exp(lr.details["ln_intercept"])) and 1.5 < lr["a"] < 2.1
    assert 0.4 < batch["a"] < 0.8 and lr.ci["a"][0] < lr["a"] < lr.ci["a"][1]
    # a mixture-of-experts release: every model at (almost) one size, 0.00 decades of N
    keys = [(n, d) for n in 1e9 * np.array([1.0, 1.004, 1.008]) for d in np.geomspace(1e9, 1e11, 3)]
    df = _lr_batch_grid(keys, lambda n, d: 1.79 * 1e9**-0.713 * d**0.307 * (1 + 0.01 * rng.standard_normal()),
                        lambda n, d: 0.58 * d**0.571, lambda n, d: 2 + 1e3 * n**-0.3, rng)
    fits = fit_steplaw(df.rename(columns={"k1": "N", "k2": "D"}), "lr", "batch", "N", "D", "loss", n_boot=200)
    lr = fits["lr"]
    assert np.isnan(lr["N"]) and np.isnan(lr.ci["N"][0]) and abs(lr["D"] - 0.307) < 0.02
    assert any(w.startswith("N spans only 0.00 decades") and "left out" in w for w in lr.warnings)
    assert np.isclose(lr.details["held_fixed"]["N"], 1.004e9, rtol=1e-2)


def test_runs_missing_from_the_runs_table_do_not_crash_the_norm_pipeline():
    from analysis.errors import AnalysisWarning

    table = norm_sweep_table(batches=(32, 64), log2_horizons=(22, 24), noise=0.001)
    curves = table.rename(columns={"D": "tokens", "loss": "val_loss", "output_norm": "norm/param/output"})
    runs = table.drop_duplicates("run_id")[["run_id", "B", "lr"]]
    known = runs[runs["B"] == 32]  # the B=64 runs are not in the runs table
    with pytest.warns(AnalysisWarning, match=r"curves of \d+ run\(s\) absent from the runs table dropped"):
        t = nt.at_horizons(curves, known, ["val_loss", "norm/param/output"], ["B", "lr"])
    assert set(t["B"]) == {32} and t["lr"].notna().all()
    opt = nt.optimal_norms(t.rename(columns={"val_loss": "loss", "norm/param/output": "output_norm", "tokens": "D"}),
                           by=["B", "D"], n_boot=0)
    assert len(opt) == 2 and opt["norm_opt"].notna().all()
    # a table that still holds such rows (NaN config): a named warning, not numpy's "argmin of an empty sequence"
    left = table["B"] == 64  # what a left join gives them: no B, no lr
    orphan = table.assign(lr=np.where(left, np.nan, table["lr"]), B=np.where(left, np.nan, table["B"]))
    with pytest.warns(AnalysisWarning, match=r"row\(s\) with no value in 'B' dropped \(a NaN group key\)"):
        o = nt.optimal_norms(orphan, norm="output_norm", loss="loss", lr="lr", by=["B", "D"], n_boot=0)
    assert len(o) == 2 and set(o["B"]) == {32} and o["lr_opt"].notna().all()
    from analysis.optimum import find_optima

    with pytest.warns(AnalysisWarning, match=r"row\(s\) with a non-finite 'lr' dropped"):
        f = find_optima(orphan, "lr", "loss", ["B", "D"], n_boot=0)
    assert set(f["B"]) == {32}
    with pytest.warns(AnalysisWarning, match=r"no value in 'B' dropped \(a NaN group key\)"):
        f = find_optima(table.assign(B=np.where(table["B"] == 64, np.nan, table["B"])), "lr", "loss", ["B", "D"],
                        n_boot=0)
    assert set(f["B"]) == {32}

"""Norm-guided eta*(D1) and per-role lr sensitivity on synthetic sweeps whose answers are known.

norm world: each run's output norm is c0 * lr * steps^p, its loss a parabola in log2(norm / norm*(D)) plus
a term falling with D, so eta*(D) = norm*(D) / (c0 steps^p) exactly. role world: the loss is a sum of
parabolas in log2 of each role's multiplier, the output's the sharpest.
"""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import cli
from analysis.errors import AnalysisError
from analysis.norm_guided import (METHODS, first_crossing, norm_curve_table, norm_guided_prediction,
                                  parabola_vertex, resolve_horizons)
from analysis.recipes import RECIPES, run_recipe
from analysis.role_lr import quadratic_surface_vertex, role_sensitivity, varying_roles

CONTEXT, P, LOG2_C0, LOG2_NORM_OPT = 64, 0.6, 2.4, 5.0


def norm_world(batches=(8, 16, 32), log2_lrs=tuple(np.arange(-10, 1.01, 0.5)), log2_tokens_max=20, drift=0.0,
               curvature=0.05, noise=0.0, seeds=(0,), train_every=16, rng_seed=0):
    """(runs, curves) of constant-lr runs; the optimal log2 norm is LOG2_NORM_OPT + drift (log2 D - 18)."""
    rng = np.random.default_rng(rng_seed)
    runs, curves = [], []
    for B in batches:
        s_max = 2**log2_tokens_max // (B * CONTEXT)
        evals = {2**j for j in range(int(np.log2(s_max)) + 1)}
        for l2 in log2_lrs:
            for sd in seeds:
                rid = f"b{B}-lr{l2:+.1f}-s{sd}"
                runs.append({"run_id": rid, "state": "done", "optim.lr": 2.0**l2, "run.batch_size": B, "run.seed": sd})
                for s in sorted(evals | set(range(train_every, s_max + 1, train_every))):
                    D = s * B * CONTEXT
                    l2n = LOG2_C0 + l2 + P * np.log2(s)
                    row = {"run_id": rid, "step": s, "tokens": D, "norm/param/output": 2.0**l2n}
                    if s in evals:  # validation only at powers of two; the norm is logged on every line
                        opt = LOG2_NORM_OPT + drift * (np.log2(D) - 18)
                        row["val_loss"] = (1.5 + 20 * D**-0.3 + curvature * (l2n - opt) ** 2
                                           + noise * rng.standard_normal())
                    curves.append(row)
    return pd.DataFrame(runs), pd.DataFrame(curves)


def true_log2_eta(B, D, drift=0.0):
    return LOG2_NORM_OPT + drift * (np.log2(D) - 18) - LOG2_C0 - P * np.log2(D / (B * CONTEXT))


def predict(runs, curves, **kwargs):
    return norm_guided_prediction(norm_curve_table(runs, curves, seed_col="run.seed"), **kwargs)


def test_helpers_vertex_and_crossing():
    u = np.arange(-4.0, 4.01, 1.0)
    fit = parabola_vertex(u, 0.1 * (u - 0.3) ** 2 + 2.0, k=5)
    assert abs(fit["u_opt"] - 0.3) < 1e-9 and abs(fit["a"] - 0.1) < 1e-9 and fit["ok"]
    assert parabola_vertex(u, -u)["edge_side"] == "high" and not parabola_vertex([1.0, 2.0], [1.0, 0.0])["ok"]
    assert first_crossing([0.0, 1.0, 2.0], [1.0, 2.0, 4.0], 3.0) == (1.5, None)
    assert first_crossing([0.0, 1.0], [1.0, 2.0], 0.5) == (0.0, "low")
    assert first_crossing([0.0, 1.0], [1.0, 2.0], 9.0) == (1.0, "high")


def test_exact_world_every_method_recovers_eta_star():
    res = predict(*norm_world(), n_boot=20)
    assert res["d0"] == 2**18 and res["d1"] == 2**20  # default d0: the largest horizon <= 2^20 / 4
    per = res["per_batch"]
    assert len(per) == 3 and res["bootstrap"]["scheme"] == "residuals"
    for _, r in per.iterrows():
        assert abs(r["log2_eta_meas"] - true_log2_eta(r["B"], 2**20)) < 1e-6
        for m in METHODS:
            assert abs(r[f"err_{m}"]) < 1e-6, (r["B"], m)
        assert abs(r["log2_norm_target_norm_constant"] - LOG2_NORM_OPT) < 1e-6
        assert abs(r["trajectory_bias"]) < 1e-9  # a power-law trajectory extrapolates exactly
    assert (res["errors"]["mae_log2"] < 1e-6).all()
    assert set(res["optima"]["role"]) == {"short", "target"}


def test_a_drifting_optimal_norm_defeats_the_constant_norm_assumption():
    # the optimal norm grows by 0.25 per octave of D: the paper's constant norm aims too low at D1
    res = predict(*norm_world(drift=0.25), n_boot=20)
    for _, r in res["per_batch"].iterrows():
        assert r["err_norm_constant"] < -0.5  # 3 octaves from the window's centre to D1: -0.75 in log2 lr
        assert abs(r["err_norm_drift"]) < 0.05 and abs(r["err_power_law"]) < 0.05
        assert abs(r["norm_drift_per_octave"] - 0.25) < 1e-6


def test_noisy_world_with_seeds_bootstraps_seeds_and_covers_the_truth():
    res = predict(*norm_world(noise=0.003, seeds=(0, 1, 2)), n_boot=200)
    assert res["bootstrap"]["scheme"] == "seeds"
    covered = 0
    for _, r in res["per_batch"].iterrows():
        truth = true_log2_eta(r["B"], 2**20)
        assert abs(r["log2_eta_meas"] - truth) < 0.1
        for m in ("norm_constant", "norm_drift"):
            assert abs(r[f"log2_eta_{m}"] - truth) < 0.2
            lo, hi = r[f"log2_eta_{m}_ci"]
            covered += lo <= truth <= hi
        lo, hi = r["err_norm_constant_ci"]
        assert lo < hi
    assert covered >= 4  # of 6 intervals
    e = res["errors"].set_index("method")
    assert e.loc["norm_constant", "mae_log2"] < 0.1


def test_single_seed_noise_gives_a_residual_bootstrap_interval():
    res = predict(*norm_world(noise=0.003), n_boot=200)
    assert res["bootstrap"]["scheme"] == "residuals" and res["bootstrap"]["norm_residual_sd"] < 1e-9
    assert set(res["bootstrap"]["loss_residual_sd"]) == {f"{2.0**j:g}" for j in (16, 17, 18, 20)}
    for _, r in res["per_batch"].iterrows():
        lo, hi = r["err_norm_constant_ci"]
        assert hi - lo > 0.01 and abs(r["err_norm_constant"]) < 0.15


def test_a_measured_optimum_at_the_grid_edge_is_censored():
    # the grid stops at 2^-4.5: B=8's eta*(2^20) = 2^-4 lies beyond it, the other batch sizes' too
    res = predict(*norm_world(log2_lrs=tuple(np.arange(-10, -4.49, 0.5))), n_boot=0)
    per = res["per_batch"].set_index("B")
    assert per.loc[8.0, "meas_edge"] == "high" and per.loc[8.0, "norm_constant_censored"]
    assert any("measured eta*(D1) is censored" in w for w in res["warnings"])
    assert (res["errors"]["censored"] >= 1).all()


def test_horizons_and_bad_input_are_named():
    runs, curves = norm_world(batches=(16,))
    table = norm_curve_table(runs, curves)
    assert resolve_horizons(table, factor=8) == (2**17, 2**20, [])
    with pytest.raises(AnalysisError, match=r"no horizon >= D1 = factor x d0 = 4 x 524288.*column 'tokens'"):
        resolve_horizons(table, d0=2**19, horizon="tokens")
    with pytest.raises(AnalysisError, match="factor=1 must be > 1"):
        resolve_horizons(table, factor=1)
    with pytest.raises(AnalysisError, match="missing column 'norm/param/nope'"):
        norm_curve_table(runs, curves, norm="norm/param/nope")
    with pytest.raises(AnalysisError, match="positive 'norm/param/output'"):
        norm_curve_table(runs, curves.assign(**{"norm/param/output": np.nan}))
    _, d1, notes = resolve_horizons(table, d0=3 * 2**16)  # 4 x d0 = 3 x 2^18 is not evaluated: the next one is
    assert d1 == 2**20 and "next evaluated horizon" in notes[0]


def test_recipe_end_to_end_with_figures(tmp_path):
    runs, curves = norm_world(noise=0.002)
    res = run_recipe("norm_guided_lr", runs, curves, tmp_path, d0=2**18, n_boot=30)
    assert res["figures"] == ["norm_guided_lr.png", "norm_trajectories.png"]
    for name in res["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert len(res["summary"]) == 3 * len(METHODS) + len(METHODS)
    assert any(str(r["log2 pred/meas"]).startswith("MAE") for r in res["summary"])
    assert res["columns"]["seed"] == "run.seed" and len(res["lr_optima"]) > 10
    with pytest.raises(AnalysisError, match="no horizon >= D1"):
        run_recipe("norm_guided_lr", runs, curves, None, d0=2**19)
    with pytest.raises(AnalysisError, match="missing column 'nope'"):
        run_recipe("norm_guided_lr", runs, curves, None, norm="nope")
    with pytest.raises(AnalysisError, match="unexpected keyword argument 'd_0'"):
        run_recipe("norm_guided_lr", runs, curves, None, d_0=1)


ROLE_TRUTH = {"output": (0.5, 0.03), "hidden": (-1.0, 0.01), "embedding": (0.3, 0.005)}  # log2 m*, curvature


def role_world(noise=0.0, seeds=(0,), output_grid=tuple(range(-3, 3)), rng_seed=0):
    """Runs of the per-role experiment: output x hidden on a grid, embedding alone, the others at 1."""
    rng = np.random.default_rng(rng_seed)
    combos = [{"output": o, "hidden": h, "embedding": 0} for o in output_grid for h in range(-3, 2)]
    combos += [{"output": 0, "hidden": 0, "embedding": e} for e in (-3, -2, -1, 1, 2)]
    rows = []
    for i, c in enumerate(combos):
        for sd in seeds:
            loss = 1.8 + sum(a * (c[r] - u) ** 2 for r, (u, a) in ROLE_TRUTH.items()) + noise * rng.standard_normal()
            rows.append({"run_id": f"r{i}-s{sd}", "state": "done", "run.seed": sd, "final_val_loss": loss,
                         "param.lr_mult.vector": 1.0, **{f"param.lr_mult.{r}": 2.0 ** c[r] for r in ROLE_TRUTH}})
    return pd.DataFrame(rows)


def test_roles_are_discovered_and_the_output_is_the_most_sensitive():
    runs = role_world()
    assert varying_roles(runs) == ["embedding", "hidden", "output"]  # vector stays at 1: not a role here
    res = role_sensitivity(runs, n_boot=0)
    roles = res["roles"].set_index("role")
    assert res["most_sensitive"] == "output" and roles.loc["output", "most_sensitive"]
    for r, (u, a) in ROLE_TRUTH.items():
        assert abs(roles.loc[r, "log2_mult_opt"] - u) < 1e-6 and abs(roles.loc[r, "curvature"] - a) < 1e-6
        assert roles.loc[r, "edge"] == ""
    diff = res["differences"].set_index(["role_a", "role_b"])
    assert abs(diff.loc[("hidden", "output"), "delta_log2_mult"] + 1.5) < 1e-6  # hidden prefers a lower rate
    (grid,) = res["grids"]
    assert grid["roles"] == ["hidden", "output"] and grid["ok"]
    assert np.allclose(grid["log2_mult_opt"], [-1.0, 0.5], atol=1e-6)


def test_noisy_roles_residual_bootstrap_and_seeds():
    res = role_sensitivity(role_world(noise=0.002), n_boot=300)
    roles = res["roles"].set_index("role")
    assert res["most_sensitive"] == "output" and roles.loc["output", "share_largest"] > 0.9
    assert res["bootstrap"]["scheme"].startswith("residual bootstrap")
    lo, hi = roles.loc["output", "log2_mult_ci"]
    assert lo < 0.5 < hi and abs(roles.loc["output", "log2_mult_opt"] - 0.5) < 0.2
    seeded = role_sensitivity(role_world(noise=0.002, seeds=(0, 1)), n_boot=100)
    assert seeded["bootstrap"]["scheme"].startswith("bootstrap over the seeds")
    assert seeded["most_sensitive"] == "output"


def test_an_output_optimum_beyond_the_scan_is_flagged():
    res = role_sensitivity(role_world(output_grid=(-3, -2, -1, 0)), n_boot=0)
    roles = res["roles"].set_index("role")
    assert roles.loc["output", "edge"] == "high"
    assert any("'output': optimum at the high edge" in w for w in res["warnings"])
    assert not res["grids"][0]["ok"] and "output high" in res["grids"][0]["edge"]


def test_quadratic_surface_and_bad_role_input():
    u1, u2 = np.meshgrid(np.arange(-3.0, 2.01), np.arange(-3.0, 3.01))
    y = 0.02 * (u1 + 1.2) ** 2 + 0.05 * (u2 - 0.4) ** 2 + 0.01 * (u1 + 1.2) * (u2 - 0.4)
    fit = quadratic_surface_vertex(u1.ravel(), u2.ravel(), y.ravel())
    assert fit["ok"] and abs(fit["u1_opt"] + 1.2) < 1e-9 and abs(fit["u2_opt"] - 0.4) < 1e-9
    with pytest.raises(AnalysisError, match="no column starts with prefix='lr.'"):
        role_sensitivity(role_world(), prefix="lr.")
    with pytest.raises(AnalysisError, match="rank_by='sharpness' must be one of curvature, spread"):
        role_sensitivity(role_world(), rank_by="sharpness")
    with pytest.raises(AnalysisError, match="missing column 'nope'"):
        run_recipe("role_lr", role_world(), pd.DataFrame(), None, y="nope")


def test_role_recipe_figures_and_summary(tmp_path):
    res = run_recipe("role_lr", role_world(noise=0.001), pd.DataFrame(), tmp_path, n_boot=100)
    assert res["figures"] == ["role_lr_slices.png", "role_lr_hidden_x_output.png"]
    for name in res["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert res["columns"]["y"] == "final_val_loss" and res["most_sensitive"] == "output"
    flags = {r["role"]: r["flag"] for r in res["summary"]}
    assert flags["output"] == "MOST SENSITIVE" and "joint hidden x output" in flags
    by_spread = run_recipe("role_lr", role_world(), pd.DataFrame(), None, rank_by="spread", n_boot=0)
    assert by_spread["most_sensitive"] == "output"


def test_cli_lists_both_recipes_and_runs_them_on_stores(tmp_path, capsys):
    from analysis.synthetic import base_config, write_run

    assert {"norm_guided_lr", "role_lr"} <= set(RECIPES)
    text = cli.recipe_options_text()
    assert "norm_guided_lr: Norm-guided prediction of eta*(D)" in text and "d0=null" in text and "factor=4.0" in text
    assert "role_lr: Per-layer lr sensitivity" in text and 'prefix="param.lr_mult."' in text
    store = tmp_path / "roles"
    for _, r in role_world(noise=0.001).iterrows():
        cfg = base_config(lr=2**-2.5, batch_size=16)
        cfg["param"]["lr_mult"].update({k: r[f"param.lr_mult.{k}"] for k in ROLE_TRUTH})
        write_run(store / r["run_id"], cfg, [{"step": 1, "tokens": 1024, "val_loss": r["final_val_loss"]}],
                  {"status": "done", "final_val_loss": r["final_val_loss"]}, {"state": "done"})
    out = tmp_path / "o"
    assert cli.main(["role_lr", "--store", str(store), "--out", str(out), "--set", "n_boot=50"]) == 0
    fits = json.loads((out / "fits.json").read_text())
    assert fits["most_sensitive"] == "output"
    assert [r["role"] for r in fits["roles"]] == ["embedding", "hidden", "output"]
    assert "MOST SENSITIVE" in capsys.readouterr().out

"""Optimum extraction: vertex recovery, edge and concavity flags, seeds, diverged runs, grid snapping."""

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.grid import snap_geometric, snap_relative
from analysis.optimum import find_optima, optimum_warnings


def sweep(opt_log2=-7.3, lo=-12, hi=-3, step=0.5, noise=0.0, seeds=(0,), curvature=0.05, seed=0, group="g"):
    rng = np.random.default_rng(seed)
    rows = []
    for x in np.arange(lo, hi + 1e-9, step):
        for s in seeds:
            y = 3.0 + curvature * (x - opt_log2) ** 2 + noise * rng.standard_normal()
            rows.append({"lr": 2.0**x, "loss": y, "seed": s, "group": group})
    return pd.DataFrame(rows)


def test_quadratic_vertex_recovers_off_grid_optimum():
    opt = find_optima(sweep(noise=0.0), "lr", "loss", method="quadratic", k=5).iloc[0]
    assert abs(opt["u_opt"] - (-7.3)) < 1e-6
    assert not opt["at_edge"] and not opt["concave"] and opt["ok"]
    arg = find_optima(sweep(noise=0.0), "lr", "loss", method="argmin").iloc[0]
    assert arg["u_opt"] == -7.5  # the nearest grid point
    ak = find_optima(sweep(noise=0.0), "lr", "loss", method="akima").iloc[0]
    assert abs(ak["u_opt"] + 7.3) < 0.1


@pytest.mark.parametrize("opt_log2, side", [(-12.5, "low"), (-2.0, "high")])
def test_edge_of_grid_is_flagged(opt_log2, side):
    for method in ("argmin", "quadratic", "akima"):
        o = find_optima(sweep(opt_log2=opt_log2), "lr", "loss", method=method).iloc[0]
        assert o["at_edge"] and o["edge_side"] == side and not o["ok"], method
        # censored: a one-sided interval that reaches past the last value tried
        assert (o["x_hi"] == np.inf and o["x_lo"] == o["x_opt"]) if side == "high" else \
            (o["x_lo"] == 0.0 and o["x_hi"] == o["x_opt"])
    warnings = optimum_warnings(find_optima(sweep(opt_log2=opt_log2), "lr", "loss"), [])
    assert any(f"{side} edge" in w for w in warnings)


def test_vertex_just_outside_the_window_is_an_edge():
    # argmin at the second point, but the parabola's vertex lies beyond the lowest lr tried
    df = sweep(opt_log2=-12.2, lo=-12, hi=-8)
    o = find_optima(df, "lr", "loss", method="quadratic").iloc[0]
    assert o["at_edge"] and o["edge_side"] == "low"


def test_concave_parabola_is_flagged():
    df = sweep(curvature=-0.05, opt_log2=-7.3)  # a maximum: the "optimum" is at an end, parabola opens down
    df = df[(np.log2(df["lr"]) > -9) & (np.log2(df["lr"]) < -6)]
    o = find_optima(df, "lr", "loss", method="quadratic", k=7).iloc[0]
    assert o["concave"] and not o["ok"]


def test_seeds_are_averaged_and_bootstrapped():
    df = sweep(noise=0.01, seeds=(0, 1, 2, 3), seed=1)
    o = find_optima(df, "lr", "loss", seed_col="seed", n_boot=300, seed=0).iloc[0]
    assert o["n_seeds"] == 4 and o["interval"] == "bootstrap over seeds"
    assert o["n_points"] == len(np.unique(df["lr"]))  # one averaged point per lr
    assert abs(o["u_opt"] + 7.3) < 0.1 and o["x_lo"] < o["x_opt"] < o["x_hi"]
    assert 0 < np.log2(o["x_hi"] / o["x_lo"]) < 1.0  # a real, informative interval (under one octave)
    # more seed-to-seed noise gives a wider interval
    wide = find_optima(sweep(noise=0.05, seeds=(0, 1, 2, 3), seed=1), "lr", "loss", seed_col="seed", n_boot=300).iloc[0]
    assert np.log2(wide["x_hi"] / wide["x_lo"]) > np.log2(o["x_hi"] / o["x_lo"])


def test_single_seed_interval_from_points_or_resolution():
    df = sweep(noise=0.005, seed=3)
    q = find_optima(df, "lr", "loss", method="quadratic", n_boot=300).iloc[0]
    assert q["interval"] == "bootstrap over fitted points" and q["x_lo"] < q["x_opt"] < q["x_hi"]
    a = find_optima(df, "lr", "loss", method="argmin").iloc[0]
    assert a["interval"] == "grid resolution"
    assert np.isclose(np.log2(a["x_hi"]) - np.log2(a["x_lo"]), 0.5)  # half a step either side


def test_diverged_runs_are_excluded_and_counted():
    df = sweep()
    df.loc[np.log2(df["lr"]) > -4, "loss"] = np.nan  # diverged: NaN loss
    df["div"] = False
    df.loc[np.isclose(np.log2(df["lr"]), -4), "div"] = True  # diverged flag with a finite last loss
    o = find_optima(df, "lr", "loss", diverged_col="div").iloc[0]
    assert o["n_diverged"] == 3 and abs(o["u_opt"] + 7.3) < 1e-6


def test_groups_and_grid_rounding():
    a, b = sweep(opt_log2=-6, group="w64"), sweep(opt_log2=-8, group="w256")
    b["lr"] = b["lr"] * (1 + 3e-4)  # the same grid logged with a different rounding
    df = pd.concat([a, b, a.assign(lr=a["lr"] * (1 - 2e-4))])  # a repeated with a rounding difference
    opt = find_optima(df, "lr", "loss", by="group").set_index("group")
    assert opt.loc["w64", "n_points"] == len(a)  # rounding variants merged, not split
    assert abs(opt.loc["w64", "u_opt"] + 6) < 1e-3 and abs(opt.loc["w256", "u_opt"] + 8) < 1e-3
    np.testing.assert_allclose(snap_geometric([2.441e-4, 2.44e-4], 2**0.5, 1.0), [2**-12] * 2)
    s = snap_relative([1.0, 1.0004, 2.0, np.nan])
    assert s[0] == s[1] and s[2] == 2.0 and np.isnan(s[3])


def test_malformed_inputs():
    df = sweep()
    with pytest.raises(AnalysisError, match="missing column 'width'"):
        find_optima(df, "lr", "loss", by="width")
    with pytest.raises(AnalysisError, match="non-positive"):
        find_optima(df.assign(lr=df["lr"] - 1), "lr", "loss")
    bad = df.assign(loss=np.nan)
    with pytest.raises(AnalysisError, match="group group=g has no finite"):
        find_optima(bad, "lr", "loss", by="group")
    with pytest.raises(AnalysisError, match="empty"):
        find_optima(df.iloc[:0], "lr", "loss")

"""Curve collapse (analysis.collapse; Qiu et al. 2025): on curves generated to collapse exactly (plus seed
noise) the irreducible loss and compute law are recovered and the spread across sizes stays at the
seed-noise floor; one size with another curve shape breaks the collapse; degenerate input; the recipe."""

import json
import warnings

import numpy as np
import pytest

from analysis import cli
from analysis.collapse import curve_collapse, fit_irreducible
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.synthetic_laws import collapse_curves, collapse_store


def test_fit_irreducible_recovers_the_compute_law():
    C = np.geomspace(1e15, 1e19, 6)
    L0, a, b = fit_irreducible(1.7 + 900.0 * C**-0.22, C)
    assert L0 == pytest.approx(1.7, abs=1e-4) and a == pytest.approx(900.0, rel=2e-3) and b == pytest.approx(0.22,
                                                                                                          abs=1e-4)
    with pytest.raises(AnalysisError, match="at least 3"):
        fit_irreducible([2.0, 1.9], [1e15, 1e16])


def test_a_consistent_sweep_collapses_to_the_seed_noise_floor():
    curves = collapse_curves(seeds=(0, 1, 2, 3), L0=1.5, a=2000.0, b=0.25, noise=0.004, seed=0)
    table, fit = curve_collapse(curves, n_boot=100)
    assert abs(fit["L0"] - 1.5) < 0.02 and abs(fit["b"] - 0.25) < 0.01 and abs(fit["a"] / 2000 - 1) < 0.1
    # groups that differ only by seed noise: Delta is the noise of a 4-seed mean, sigma / 2
    assert 0.25 < fit["collapse_ratio"] < 1.0 and 0.5 < fit["excess_ratio"] < 2.0
    assert fit.details["consistent"] and fit.details["supercollapse"] and not fit.warnings
    lo, hi = fit.ci["collapse_ratio"]
    assert lo < 1.5 and np.isfinite(hi)
    assert list(table.columns[:4]) == ["x", "delta", "sigma", "floor"] and "model.width=512" in table
    assert np.allclose(table["model.width=64"], table["model.width=512"], atol=0.05)


def test_a_size_with_another_curve_shape_breaks_the_collapse():
    curves = collapse_curves(off_shape={512: {"a": 1.0, "p": 0.9}}, noise=0.004, seed=0)
    _, fit = curve_collapse(curves, n_boot=50)
    assert fit["excess_ratio"] > 3 and fit["collapse_ratio"] > 1.5
    assert not fit.details["consistent"] and not fit.details["supercollapse"]
    assert any("not be scaled consistently across model.width" in w for w in fit.warnings)


def test_degenerate_input_is_named():
    one_seed = collapse_curves(seeds=(0,))
    _, fit = curve_collapse(one_seed, n_boot=20)
    assert np.isnan(fit["collapse_ratio"]) and any("one seed per group" in w for w in fit.warnings)
    with pytest.raises(AnalysisError, match="need at least 2"):
        curve_collapse(collapse_curves(widths=(64,)))
    two = collapse_curves(widths=(64, 128))
    _, fit = curve_collapse(two, n_boot=0)  # too few sizes to fit L0: falls back to 0 and says so
    assert fit["L0"] == 0.0 and any("irreducible loss not fitted" in w for w in fit.warnings)
    _, fit = curve_collapse(two, irreducible=1.5, n_boot=0)
    assert fit["L0"] == 1.5 and "a" not in fit.params
    nan_key = collapse_curves()
    nan_key.loc[nan_key["run_id"] == "w64-s0", "model.width"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        curve_collapse(nan_key, n_boot=0)
    assert any(issubclass(w.category, AnalysisWarning) and "w64-s0" in str(w.message) for w in caught)
    with pytest.raises(AnalysisError, match="missing column 'val_loss'"):
        curve_collapse(nan_key, loss="val_loss")


def test_curve_collapse_recipe_from_a_store(tmp_path, capsys):
    store = tmp_path / "store"
    collapse_store(store, seeds=(0, 1, 2))
    out = tmp_path / "out"
    assert cli.main(["curve_collapse", "--store", str(store), "--out", str(out), "--set", "n_boot=50"]) == 0
    printed = capsys.readouterr().out
    fits = json.loads((out / "fits.json").read_text())
    assert (out / "curve_collapse.png").stat().st_size > 1000
    assert fits["fit"]["details"]["consistent"] and abs(fits["fit"]["params"]["L0"] - 1.5) < 0.03
    assert fits["fit"]["details"]["groups"] == [f"model.width={w}" for w in (64, 128, 256, 512)]
    assert "consistent" in printed

"""The AdamW weight-decay timescale (analysis.wd_timescale; Wang & Aitchison 2024, Bergsma et al. 2025):
tau = B/(eta lambda D), tau* per (N, D), the law tau* = c (D/N)^m recovered from a sweep generated with
known c and m, lambda*, degenerate input, and the recipe from a store."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import cli
from analysis.errors import AnalysisError
from analysis.synthetic_laws import wd_sweep_store, wd_sweep_table
from analysis.wd_timescale import adamw_timescale, fit_wd_timescale, lambda_opt, tau_opt


def test_timescale_in_epochs_of_the_run():
    eta, lam, B, D = 3e-3, 0.1, 2**19, 2**33  # batch and horizon in tokens: S = D / B = 16384 steps
    tau = adamw_timescale(eta, lam, batch=B, tokens=D)
    assert tau == pytest.approx(B / (eta * lam * D))
    assert adamw_timescale(eta, lam, D / B) == pytest.approx(tau)
    assert tau == pytest.approx((1 / (eta * lam)) / (D / B))  # tau_iter / iterations
    assert np.isinf(adamw_timescale(eta, 0.0, 100))
    with pytest.raises(AnalysisError, match="give steps"):
        adamw_timescale(eta, lam)


def test_recovers_the_power_law_of_the_optimal_timescale():
    df = wd_sweep_table(c=0.3, m=-0.5, seeds=(0, 1), noise=0.001)
    optima, fit = fit_wd_timescale(df, seed_col="run.seed", n_boot=300)
    assert optima["ok"].all() and len(optima) == 9
    assert np.allclose(optima["tau_opt"], 0.3 * optima["tpp"] ** -0.5, rtol=0.03)
    assert abs(fit["m"] + 0.5) < 0.02 and abs(fit["c"] / 0.3 - 1) < 0.05
    for k, v in (("c", 0.3), ("m", -0.5)):
        lo, hi = fit.ci[k]
        assert lo <= v <= hi, (k, fit.ci[k])
    assert not fit.warnings
    # lambda*(N, D, B, eta) = B / (eta D tau*): at 1e9 params, 20 tokens/param, 2^16 tokens/step, eta 2e-3
    N, D, B, eta = 1e9, 2e10, 2**16, 2e-3
    true = B / (eta * D * 0.3 * 20**-0.5)
    est, lo, hi = lambda_opt(fit, N, D, eta, batch=B)
    assert abs(est / true - 1) < 0.06 and lo <= true <= hi
    assert lambda_opt(fit, N, D, eta, steps=D / B)[0] == pytest.approx(est)
    assert tau_opt(fit, N, D) == pytest.approx(1 / (eta * est * D / B))


def test_degenerate_sweeps_are_named():
    df = wd_sweep_table(seeds=(0,))
    narrow = df[df["optim.weight_decay"] >= 2.0**0]  # only large decays: every optimum at the low-tau edge
    with pytest.raises(AnalysisError, match="interior optim"):
        fit_wd_timescale(narrow, n_boot=0)
    one_tpp = df[np.isclose(df["tokens"] / df["n_params"], 20, rtol=0.01)]
    with pytest.raises(AnalysisError, match="same tokens per parameter"):
        fit_wd_timescale(one_tpp, n_boot=0)
    with_zero = df.copy()
    with_zero.loc[with_zero.index[:3], "optim.weight_decay"] = 0.0
    _, fit = fit_wd_timescale(with_zero, n_boot=0)
    assert any("no decay, tau = inf" in w for w in fit.warnings)
    with pytest.raises(AnalysisError, match="missing column 'optim.wd'"):
        fit_wd_timescale(df, wd="optim.wd")
    pooled = df.assign(**{"run.batch_size": 1}).copy()
    shifted = df.assign(final_val_loss=df["final_val_loss"] + 0.05, **{"run.batch_size": 2})
    _, fit = fit_wd_timescale(pd.concat([pooled, shifted]), n_boot=0)
    assert any("pooled" in w and "run.batch_size" in w for w in fit.warnings)


def test_wd_timescale_recipe_from_a_store(tmp_path, capsys):
    store = tmp_path / "store"
    wd_sweep_store(store, c=0.3, m=-0.5, seeds=(0, 1))
    out = tmp_path / "out"
    pred = json.dumps([{"N": 1e9, "D": 2e10, "lr": 2e-3, "batch": 65536}])
    assert cli.main(["wd_timescale", "--store", str(store), "--out", str(out), "--set", "n_boot=200",
                     "--set", f"predict={pred}"]) == 0
    printed = capsys.readouterr().out
    fits = json.loads((out / "fits.json").read_text())
    assert (out / "wd_timescale.png").stat().st_size > 1000
    assert fits["columns"]["steps"] == "run.steps" and fits["columns"]["seed"] == "run.seed"
    assert abs(fits["fit"]["params"]["m"] + 0.5) < 0.03
    lam = fits["lambda_opt"][0]
    assert abs(lam["lambda_opt"] / (65536 / (2e-3 * 2e10 * 0.3 * 20**-0.5)) - 1) < 0.08
    assert "lambda* =" in printed and "tau* = c (D/N)^m" in printed

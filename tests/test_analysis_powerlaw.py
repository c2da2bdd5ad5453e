"""Power-law and log-linear fits: parameter recovery, bootstrap coverage, malformed input."""

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.powerlaw import fit_log_linear, fit_power_law, predict_log_linear, predict_power_law


def test_power_law_recovery_with_noise():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e6, 1e10, 40)
    df = pd.DataFrame({"N": x, "lr": 3.0 * x**-0.7 * np.exp(0.05 * rng.standard_normal(40))})
    fit = fit_power_law(df, "N", "lr", n_boot=1000)
    assert abs(fit["b"] + 0.7) < 0.02 and abs(np.log(fit["a"] / 3.0)) < 0.3
    assert fit.ci["b"][0] < -0.7 < fit.ci["b"][1]
    assert fit.r2 > 0.99 and fit.ok
    np.testing.assert_allclose(predict_power_law(fit, [1e8]), fit["a"] * 1e8 ** fit["b"])


def test_bootstrap_interval_coverage_is_about_95_percent():
    """200 synthetic datasets; the 95 % percentile interval of the exponent should contain the truth in
    about 95 % of them (binomial sd 1.5 %: accept 90-99 %)."""
    rng = np.random.default_rng(123)
    x = np.geomspace(1, 1000, 30)
    hits = 0
    for i in range(200):
        df = pd.DataFrame({"x": x, "y": 2.0 * x**0.5 * np.exp(0.2 * rng.standard_normal(30))})
        fit = fit_power_law(df, "x", "y", n_boot=400, seed=i)
        hits += fit.ci["b"][0] <= 0.5 <= fit.ci["b"][1]
    assert 0.90 <= hits / 200 <= 0.99, hits


def test_joint_log_linear_lr_law_recovers_alpha_beta_gamma():
    """eta*(B, D): log2 eta = alpha log2 B + beta log2 D + gamma (norm-transfer form), with noise."""
    rng = np.random.default_rng(1)
    B, D = np.meshgrid(2.0 ** np.arange(3, 10), 2.0 ** np.arange(20, 28, 2))
    B, D = B.ravel(), D.ravel()
    lr = 2.0 ** (0.62 * np.log2(B) - 0.56 * np.log2(D) + 9.8 + 0.1 * rng.standard_normal(B.size))
    df = pd.DataFrame({"B": B, "D": D, "lr": lr})
    fit = fit_log_linear(df, "lr", ["B", "D"], base=2.0, n_boot=1000)
    assert abs(fit["B"] - 0.62) < 0.05 and abs(fit["D"] + 0.56) < 0.05 and abs(fit["intercept"] - 9.8) < 1.5
    for k, v in (("B", 0.62), ("D", -0.56)):
        assert abs(fit[k] - v) < 3 * fit.se[k]  # (a single draw: 3 SE, coverage is tested separately)
        assert 3 * fit.se[k] < fit.ci[k][1] - fit.ci[k][0] < 5 * fit.se[k]  # ~ +-1.96 SE
    pred = predict_log_linear(fit, df)
    assert np.corrcoef(np.log(pred), np.log(lr))[0, 1] > 0.95


def test_cluster_bootstrap_and_replicate_propagation_widen_intervals():
    rng = np.random.default_rng(2)
    x = np.repeat([64.0, 128, 256, 512], 5)
    df = pd.DataFrame({"w": x, "lr": 0.01 * (x / 64) ** -1 * np.exp(0.05 * rng.standard_normal(20))})
    plain = fit_power_law(df, "w", "lr", n_boot=500)
    clustered = fit_power_law(df, "w", "lr", n_boot=500, cluster="w")
    width = lambda f: f.ci["b"][1] - f.ci["b"][0]  # noqa: E731
    assert clustered.details["bootstrap"]["resample"] == "clusters of w"
    noisy = df["lr"].to_numpy()[None] * np.exp(0.3 * rng.standard_normal((200, 20)))
    propagated = fit_power_law(df, "w", "lr", n_boot=500, y_samples=noisy)
    assert width(propagated) > 2 * width(plain)


def test_malformed_inputs_name_the_column():
    df = pd.DataFrame({"x": [1.0, 2, 4, 8], "y": [1.0, 2, 0, 3]})
    with pytest.raises(AnalysisError, match="'y' has 1 non-positive"):
        fit_power_law(df, "x", "y")
    with pytest.raises(AnalysisError, match="missing column 'z'"):
        fit_power_law(df, "z", "y")
    with pytest.raises(AnalysisError, match="empty"):
        fit_power_law(df.iloc[:0], "x", "y")
    with pytest.raises(AnalysisError, match="singular"):
        fit_power_law(pd.DataFrame({"x": [2.0] * 5, "y": [1.0, 2, 3, 4, 5]}), "x", "y")
    with pytest.raises(AnalysisError, match="need at least 3"):
        fit_power_law(df.iloc[:2].assign(y=1.0), "x", "y")

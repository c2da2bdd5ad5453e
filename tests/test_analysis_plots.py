"""Figures: each function draws what it says (panels, lines, log2 axes, markers) and saves a PNG."""

import numpy as np
import pandas as pd

from analysis import plots
from analysis.fit import Fit
from analysis.isoflop import isoflop_optima
from analysis.optimum import find_optima
from analysis.powerlaw import fit_power_law
from analysis.synthetic import chinchilla_points


def _lr_runs():
    rows = []
    for kind in ("sp", "mup"):
        for w in (64, 128, 256):
            opt = -6 - np.log2(w / 64) if kind == "sp" else -7
            for x in np.arange(-12, -2, 1.0):
                y = 3 + 0.03 * (x - opt) ** 2 if x - opt < 4 else np.nan
                rows.append({"param.kind": kind, "model.width": w, "optim.lr": 2.0**x, "final_val_loss": y})
    return pd.DataFrame(rows)


def _is_log2(ax, axis="x"):
    scale = getattr(ax, f"get_{axis}scale")()
    base = getattr(ax, f"{axis}axis")._scale.base
    return scale == "log" and base == 2


def test_loss_vs_lr_panels_lines_and_optima(tmp_path):
    runs = _lr_runs()
    optima = find_optima(runs, "optim.lr", "final_val_loss", ["param.kind", "model.width"], n_boot=0)
    fig = plots.plot_loss_vs_lr(runs, optima=optima)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["param.kind = mup", "param.kind = sp"]
    for ax in axes:
        assert _is_log2(ax, "x") and ax.get_xlabel().startswith("learning rate")
        curves = [ln for ln in ax.get_lines() if ln.get_label().startswith("width=")]
        assert len(curves) == 3  # one line per width, in sequential colours
        assert len({tuple(ln.get_color()) for ln in curves}) == 3
    assert any(ln.get_marker() == "x" for ln in axes[1].get_lines())  # diverged SP runs marked
    path = plots.save_figure(fig, tmp_path / "a.png")
    assert path.stat().st_size > 5000


def test_optimal_lr_vs_width_with_fits():
    runs = _lr_runs()
    optima = find_optima(runs, "optim.lr", "final_val_loss", ["param.kind", "model.width"], n_boot=0)
    fits = {k: fit_power_law(g, "model.width", "x_opt", n_boot=100) for k, g in optima.groupby("param.kind")}
    fig = plots.plot_optimal_lr_vs_width(optima, fits=fits)
    ax = fig.get_axes()[0]
    assert _is_log2(ax, "x") and _is_log2(ax, "y")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lbl.startswith("sp: η* ∝ width") and "-1.00" in lbl for lbl in labels)


def test_norm_figures(tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"output_norm": 2.0 ** rng.uniform(4, 10, 40), "lr": 2.0 ** rng.uniform(-8, -2, 40)})
    table["loss"] = 3 + 0.02 * (np.log2(table["output_norm"]) - 7) ** 2
    fig = plots.plot_loss_vs_norm(table, optimum={"norm_opt": 128.0, "log2_norm_opt": 7.0, "coef_a": 0.02,
                                                  "coef_b": -0.28, "coef_c": 3.98}, band=(6.8, 7.2))
    ax = fig.get_axes()[0]
    assert _is_log2(ax, "x") and len(fig.get_axes()) == 2  # plot + colorbar (log2 lr)
    curves = pd.DataFrame({"run_id": ["a"] * 5 + ["b"] * 5, "step": list(range(1, 6)) * 2,
                           "norm/param/output": np.r_[np.arange(1, 6), 2 * np.arange(1, 6)]})
    runs = pd.DataFrame({"run_id": ["a", "b"], "optim.lr": [1e-3, 1e-2], "run.batch_size": [32, 64]})
    fig = plots.plot_norm_vs_step(curves, runs)
    panels = [a for a in fig.get_axes() if a.get_title()]
    assert [a.get_title() for a in panels] == ["batch_size = 32", "batch_size = 64"]
    assert [len(a.get_lines()) for a in panels] == [1, 1] and all(_is_log2(a, "y") for a in panels)
    per = pd.DataFrame({"D": 2.0 ** np.arange(20, 26, 2), "B_opt": [16, 32, 64], "b_at_edge": [True, False, False]})
    fig = plots.plot_bstar(per, fit=fit_power_law(per, "D", "B_opt", n_boot=50))
    assert _is_log2(fig.get_axes()[0], "y")
    opt = pd.DataFrame({"B": [16, 32, 16, 32], "D": [2.0**20, 2.0**20, 2.0**22, 2.0**22],
                        "lr_opt": [0.1, 0.14, 0.05, 0.07], "ok": True})
    fig = plots.plot_lr_vs_batch(opt)
    assert len(fig.get_axes()[0].get_legend().get_texts()) == 2  # one entry per horizon
    plots.save_figure(fig, tmp_path / "b.png")


def test_compute_optimal_figures(tmp_path):
    p = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
    df = chinchilla_points(p, per_budget=7, noise=0.003)
    fig = plots.plot_isoflop(df, vertices=isoflop_optima(df, n_boot=20))
    assert len([ln for ln in fig.get_axes()[0].get_lines() if ln.get_marker() == "*"]) == 5  # a vertex per budget
    fit = Fit("chinchilla_approach3", dict(p), r2=0.99, details={"delta": 1e-3})
    fig = plots.plot_chinchilla_fit(df, fit)
    left, right = fig.get_axes()[:2]
    assert right.get_ylabel().startswith("log residual") and right.get_xscale() == "log"
    assert left.get_xlabel() == "predicted L(N, D)" and len(left.collections) == 1  # one scatter of all points
    plots.save_figure(fig, tmp_path / "c.png")


def test_diagnostic_figures():
    df = pd.DataFrame([{"width": w, "step": s, "layer": layer, "rms": 1.0 if layer == "flat" else w / 64}
                       for w in (64, 128, 256) for s in (0, 10) for layer in ("flat", "growing")])
    fig = plots.plot_coord_check(df)
    titles = [a.get_title() for a in fig.get_axes() if a.get_visible()]
    assert "flat  (slope +0.00)" in titles and "growing  (slope +1.00)" in titles
    rng = np.random.default_rng(0)
    fig = plots.plot_embedding_row_norms(None, groups={"adamw": rng.lognormal(0, 0.1, 256),
                                                      "lion": rng.lognormal(1, 0.5, 256)})
    ax = fig.get_axes()[0]
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 2

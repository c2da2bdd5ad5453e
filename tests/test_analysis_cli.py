"""`analyze` end to end on synthetic stores: files written, fits close to the truth, warnings shown,
and malformed input giving one clear line with exit status 2."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import cli
from analysis.recipes import RECIPES, resolve_experiment
from analysis.errors import AnalysisError
from analysis.synthetic import lr_sweep_store, norm_sweep_store


@pytest.fixture(scope="module")
def lr_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("lr_store")
    truth = lr_sweep_store(store, seeds=(0, 1), widths=(64, 128, 256, 512, 1024))
    return store, truth


def test_lr_transfer_end_to_end(lr_store, tmp_path, capsys):
    store, truth = lr_store
    out = tmp_path / "results" / "lr"
    assert cli.main(["lr_transfer", "--store", str(store), "--out", str(out), "--set", "n_boot=300"]) == 0
    printed = capsys.readouterr().out
    for name in ("fits.json", "runs.parquet", "loss_vs_lr.png", "optimal_lr_vs_width.png"):
        assert (out / name).stat().st_size > 1000, name
    fits = json.loads((out / "fits.json").read_text())
    assert fits["columns"]["y"] == "final_val_loss" and fits["columns"]["seed"] == "run.seed"
    for row in fits["optima"]:
        true = truth[(row["param.kind"], row["model.width"])]
        assert abs(np.log2(row["x_opt"] / true)) < 0.2
        assert row["x_lo"] <= row["x_opt"] <= row["x_hi"]
    sp, mup = fits["laws"]["sp"], fits["laws"]["mup"]
    assert abs(sp["params"]["b"] + 1) < 0.05 and not sp["details"]["transfers_across_width"]
    assert abs(mup["params"]["b"]) < 0.05 and mup["details"]["transfers_across_width"]
    assert mup["ci"]["b"][0] < 0 < mup["ci"]["b"][1]
    assert fits["runs"]["diverged"] > 0 and any(r["n_diverged"] > 0 for r in fits["optima"])
    assert "transfers" in printed and "width^" in printed
    assert len(pd.read_parquet(out / "runs.parquet")) == sum(fits["runs"].values())


def test_edge_optima_are_shown_plainly(tmp_path, capsys):
    store = tmp_path / "narrow"
    lr_sweep_store(store, kinds=("sp",), widths=(64, 128, 256), log2_lrs=tuple(np.arange(-14, -8.5, 1.0)))
    assert cli.main(["lr_transfer", "--store", str(store), "--out", str(tmp_path / "o"), "--set", "n_boot=50"]) == 0
    printed = capsys.readouterr().out
    assert "EDGE" in printed and "high edge of the grid for param.kind=sp, model.width=64" in printed
    assert "fit eta*(width) for param.kind=sp failed" in printed  # no interior optima left: says so plainly


def test_a_fully_diverged_group_is_reported_not_fatal(tmp_path, capsys):
    store = tmp_path / "div"
    # width 1024 under SP: every lr of this grid is past the divergence threshold
    lr_sweep_store(store, kinds=("sp",), widths=(64, 128, 256, 1024), log2_lrs=tuple(np.arange(-9, -3.5, 1.0)),
                   diverge_above=0.5)
    assert cli.main(["lr_transfer", "--store", str(store), "--out", str(tmp_path / "o"), "--set", "n_boot=50"]) == 0
    printed = capsys.readouterr().out
    assert "no finite points for param.kind=sp, model.width=1024" in printed
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    row = [r for r in fits["optima"] if r["model.width"] == 1024][0]
    assert row["x_opt"] is None and row["n_diverged"] == 6 and row["ok"] is False


def test_experiment_file_and_options(lr_store, tmp_path, capsys):
    store, _ = lr_store
    exp = tmp_path / "my_sweep.py"
    exp.write_text('ANALYSIS = {"recipe": "lr_transfer", "y": "best_val_loss", "method": "akima", "n_boot": 50}\n')
    assert resolve_experiment(str(exp)) == ("lr_transfer", {"y": "best_val_loss", "method": "akima", "n_boot": 50})
    assert cli.main([str(exp), "--store", str(store), "--out", str(tmp_path / "o")]) == 0
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert fits["columns"]["y"] == "best_val_loss" and fits["method"] == "akima"


@pytest.mark.parametrize("argv, message", [
    (["lr_transfer", "--set", "y=nope"], "missing column 'nope'"),
    (["lr_transfer", "--set", "width=model.depth_x"], "missing column 'model.depth_x'"),
    (["no_such_recipe"], "neither a recipe"),
    (["lr_transfer", "--set", "bogus=1"], "unexpected keyword argument 'bogus'"),
    (["lr_transfer", "--set", "novalue"], "must look like key=value"),
])
def test_malformed_input_gives_one_line_and_status_2(lr_store, tmp_path, capsys, argv, message):
    store, _ = lr_store
    code = cli.main(argv[:1] + ["--store", str(store), "--out", str(tmp_path / "o")] + argv[1:])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_experiment_recorded_in_the_store(tmp_path):
    (tmp_path / "_experiments").mkdir()
    (tmp_path / "_experiments" / "quick.json").write_text(json.dumps({"name": "quick", "analysis": {
        "recipe": "lr_transfer", "width": "model.width"}}))
    assert resolve_experiment("quick", [tmp_path]) == ("lr_transfer", {"width": "model.width"})
    (tmp_path / "_experiments" / "bare.json").write_text(json.dumps({"name": "bare", "analysis": None}))
    with pytest.raises(AnalysisError, match="defines no ANALYSIS"):
        resolve_experiment("bare", [tmp_path])


def test_missing_store_and_bad_experiment_file(tmp_path, capsys):
    assert cli.main(["lr_transfer", "--store", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    exp = tmp_path / "bad.py"
    exp.write_text("ANALYSIS = {'recipe': 'lr_transfer'\n")
    with pytest.raises(AnalysisError, match="failed to import"):
        resolve_experiment(str(exp))
    exp.write_text("X = 1\n")
    with pytest.raises(AnalysisError, match="defines no ANALYSIS"):
        resolve_experiment(str(exp))


def test_norm_transfer_recipe(tmp_path, capsys):
    store = tmp_path / "norm"
    norm_sweep_store(store, noise=0.001)
    out = tmp_path / "o"
    assert cli.main(["norm_transfer", "--store", str(store), "--out", str(out), "--set", "n_boot=100"]) == 0
    fits = json.loads((out / "fits.json").read_text())
    assert abs(fits["optimal_norm"]["log2_norm_mean"] - 7.0) < 0.15
    joint = fits["fits"]["lr_joint"]["params"]  # columns renamed to B (batch) and D (horizon) by the recipe
    assert abs(joint["B"] - 0.5) < 0.1 and abs(joint["D"] + 0.5) < 0.1
    for name in ("loss_vs_norm.png", "norm_vs_step.png", "lr_vs_batch.png", "bstar_vs_horizon.png"):
        assert (out / name).stat().st_size > 1000


def test_chinchilla_recipe_on_a_store(tmp_path, capsys):
    from analysis.synthetic import base_config, write_run
    truth = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
    rng = np.random.default_rng(0)
    store = tmp_path / "chin"
    for i, N in enumerate(np.geomspace(1e6, 1e9, 12)):  # 240 runs: the fitter's compiled shapes are reused
        for D in np.geomspace(1e8, 1e11, 20):
            L = (truth["E"] + truth["A"] * N ** -truth["alpha"] + truth["B"] * D ** -truth["beta"]) * \
                np.exp(0.002 * rng.standard_normal())
            write_run(store / f"n{i}-d{D:.0e}", base_config(), [{"step": 1, "tokens": int(D), "val_loss": L}],
                      {"status": "done", "final_val_loss": L, "n_params": N, "tokens": D}, {"state": "done"})
    out = tmp_path / "o"
    assert cli.main(["chinchilla", "--store", str(store), "--out", str(out), "--set", "starts=small",
                     "--set", "n_boot=100"]) == 0
    fit = json.loads((out / "fits.json").read_text())["fit"]
    assert abs(fit["params"]["alpha"] - 0.35) < 0.03 and abs(fit["params"]["beta"] - 0.37) < 0.03
    assert (out / "chinchilla_fit.png").exists()
    assert "N_opt(C=" in capsys.readouterr().out


def test_registry_lists_the_recipes():
    assert {"lr_transfer", "norm_transfer", "chinchilla", "isoflop", "critical_batch"} <= set(RECIPES)


def test_isoflop_and_critical_batch_recipes(tmp_path, capsys):
    from analysis.synthetic import base_config, chinchilla_points, write_run
    params = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.34}
    iso = tmp_path / "iso"
    for i, r in chinchilla_points(params, per_budget=9, noise=0.001).iterrows():
        write_run(iso / f"r{i}", base_config(), [{"step": 1, "tokens": int(r.D), "val_loss": r.loss}],
                  {"status": "done", "final_val_loss": r.loss, "n_params": r.N, "tokens": r.D}, {"state": "done"})
    assert cli.main(["isoflop", "--store", str(iso), "--out", str(tmp_path / "o1"), "--set", "n_boot=100"]) == 0
    fit = json.loads((tmp_path / "o1" / "fits.json").read_text())["fit"]
    assert abs(fit["params"]["N_exponent"] - 0.5) < 0.03 and any("biased" in w for w in fit["warnings"])
    assert (tmp_path / "o1" / "isoflop.png").exists()

    cbs = tmp_path / "cbs"
    for B in (8, 16, 32, 64, 128, 256, 512, 1024):
        s_target = 1000 * (1 + 256 / B)  # steps to reach loss 3.0: McCandlish's form with B_noise = 256
        rows = [{"step": int(s), "tokens": int(s) * B, "val_loss": 5.0 - 2.0 * s / s_target}
                for s in np.unique(np.geomspace(10, 3 * s_target, 40).astype(int))]
        write_run(cbs / f"b{B}", base_config(batch_size=B), rows,
                  {"status": "done", "final_val_loss": rows[-1]["val_loss"]}, {"state": "done"})
    assert cli.main(["critical_batch", "--store", str(cbs), "--out", str(tmp_path / "o2"), "--set", "target=3.0",
                     "--set", "n_boot=100"]) == 0
    fits = json.loads((tmp_path / "o2" / "fits.json").read_text())["fits"]["all"]
    assert abs(fits["params"]["B_noise"] / 256 - 1) < 0.05 and abs(fits["params"]["S_min"] / 1000 - 1) < 0.05
    assert "CBS (Zhang)" in capsys.readouterr().out
    assert cli.main(["critical_batch", "--store", str(cbs), "--out", str(tmp_path / "o3")]) == 2
    assert "target" in capsys.readouterr().err


def test_experiment_selection_from_a_store_of_several(tmp_path, capsys):
    from test_analysis_load import two_experiment_store

    store = two_experiment_store(tmp_path)
    out = tmp_path / "o"
    argv = ["lr_transfer", "--store", str(store), "--out", str(out), "--set", "n_boot=0", "--set", "kind=optim.name"]
    assert cli.main(argv + ["--experiment", "width_sweep"]) == 0
    printed = capsys.readouterr().out
    assert "3 runs of experiment 'width_sweep' (5 in the store)" in printed
    fits = json.loads((out / "fits.json").read_text())
    assert fits["experiment"] == "width_sweep" and sum(fits["runs"].values()) == 3
    assert sorted(pd.read_parquet(out / "runs.parquet")["run_id"]) == ["shared", "w-a", "w-b"]
    assert cli.main(argv) == 0  # no selection: all runs, and a warning that says so
    assert "the store holds 2 experiments (lr_sweep, width_sweep): all 5 runs are analysed together" in \
        capsys.readouterr().out
    assert cli.main(argv + ["--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    (store / "_experiments" / "width_sweep.json").write_text(json.dumps(
        {"name": "width_sweep", "analysis": {"recipe": "lr_transfer", "kind": "optim.name", "n_boot": 0},
         "runs": ["w-a", "w-b", "shared"]}))
    assert cli.main(["width_sweep", "--store", str(store), "--out", str(out)]) == 0  # recorded: its own runs
    assert "3 runs of experiment 'width_sweep'" in capsys.readouterr().out


@pytest.fixture(scope="module")
def optimizer_store(tmp_path_factory):
    from analysis.synthetic import optimizer_sweep_store

    store = tmp_path_factory.mktemp("optim_store")
    truth = optimizer_sweep_store(store, seeds=(0, 1, 2), noise=0.001)
    return store, truth


def test_optimizer_comparison_recipe_end_to_end(optimizer_store, tmp_path, capsys):
    from analysis.synthetic import true_optimizer_lr

    store, truth = optimizer_store
    out = tmp_path / "o"
    assert cli.main(["optimizer_comparison", "--store", str(store), "--out", str(out), "--set", "n_boot=300"]) == 0
    printed = capsys.readouterr().out
    assert (out / "optimizer_comparison.png").stat().st_size > 1000
    fits = json.loads((out / "fits.json").read_text())
    assert fits["columns"]["seed"] == "run.seed" and fits["baseline"] == "adamw"
    tuned = pd.DataFrame(fits["tuned"])
    assert len(tuned) == 10 and not tuned["at_edge"].any()
    for _, r in tuned.iterrows():  # each optimizer at its own tuned lr
        steps = round(r["horizon"] / (32 * 128))
        assert abs(np.log2(r["lr_opt"] / true_optimizer_lr(r["optim.name"], steps))) < 0.25
        assert r["lr_lo"] <= r["lr_opt"] <= r["lr_hi"]
    speed = pd.DataFrame(fits["speedups"])
    assert len(speed) == 5 and (speed["optim.name"] == "muon").all()
    assert (speed["speedup"] - truth["speedups"]["muon"]).abs().max() < 0.03
    assert ((speed["speedup_lo"] < 1.4) & (speed["speedup_hi"] > 1.4)).mean() >= 0.6  # 3 seeds: a rough interval
    assert (speed["speedup_hi"] - speed["speedup_lo"] > 0.01).all()
    assert speed["interval"].str.startswith("bootstrap over 3 seeds").all()
    assert "baseline" in printed and "muon" in printed and "[" in printed
    assert not any("conditional" in w for w in fits["warnings"])


def test_optimizer_comparison_with_one_seed_states_its_noise_and_flags_untuned_optimizers(tmp_path, capsys):
    from analysis.synthetic import optimizer_sweep_store

    store = tmp_path / "s"
    optimizer_sweep_store(store, horizons=(64, 128, 256, 512), log2_lr_offsets=(-3.0, -2.0, -1.0, 0.0), noise=0.0005)
    out = tmp_path / "o"
    assert cli.main(["optimizer_comparison", "--store", str(store), "--out", str(out), "--set", "n_boot=200"]) == 0
    fits = json.loads((out / "fits.json").read_text())
    assert any("conditional on the compared losses being exact" in w for w in fits["warnings"])
    assert any("best lr is at the high edge of the grid" in w for w in fits["warnings"])  # the grid stops at lr*
    assert cli.main(["optimizer_comparison", "--store", str(store), "--out", str(out), "--set", "n_boot=200",
                     "--set", "loss_noise=0.0005"]) == 0
    speed = pd.DataFrame(json.loads((out / "fits.json").read_text())["speedups"])
    assert speed["interval"].str.startswith("conditional on loss_noise=0.0005").all()
    assert cli.main(["optimizer_comparison", "--store", str(store), "--out", str(out), "--set", "baseline=sgd"]) == 2
    assert "baseline 'sgd' is not among the optimizers" in capsys.readouterr().err


def test_optimizer_comparison_per_model_size(tmp_path, capsys):
    from analysis.synthetic import optimizer_sweep_store

    small = dict(horizons=(64, 128, 256, 512), log2_lr_offsets=(-1.0, 0.0, 1.0), noise=0.0)
    optimizer_sweep_store(tmp_path / "w64", width=64, **small)
    optimizer_sweep_store(tmp_path / "w256", width=256, speedups={"adamw": 1.0, "muon": 1.2}, **small)
    argv = ["optimizer_comparison", "--store", str(tmp_path / "w64"), "--store", str(tmp_path / "w256"),
            "--out", str(tmp_path / "o"), "--set", "n_boot=50"]
    assert cli.main(argv) == 0  # two model sizes pooled: said, with the column that separates them
    assert "pass by='model.width'" in capsys.readouterr().out
    assert cli.main(argv + ["--set", "by=model.width", "--set", "loss_noise=0.001"]) == 0
    speed = pd.DataFrame(json.loads((tmp_path / "o" / "fits.json").read_text())["speedups"])
    got = speed.groupby("model.width")["speedup"].mean().to_dict()
    assert abs(got[64] - 1.4) < 0.02 and abs(got[256] - 1.2) < 0.02

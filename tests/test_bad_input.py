"""Bad input to the `scaling` command: one line naming the field or file, exit status 2, and nothing written
(no run directory, no store, no --out directory); `analyze` leaves out a run whose files it cannot read and
analyses the others."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling_cli import main
from tests.conftest import TINY
from tests.sweep_fixtures import shared_jax_cache, write_experiment

SETS = [a for o in TINY for a in ("--set", o)]


def refusal(capsys, code: int) -> str:
    """The one error line of a refused command (asserting that it was refused with status 2)."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- scaling train


@pytest.mark.parametrize("yaml_lr, override", [(".inf", None), (".nan", None), (None, "optim.lr=inf"),
                                               (None, "optim.lr=nan"), (None, "optim.lr=-Infinity")])
def test_a_non_finite_float_field_is_refused(tmp_path, capsys, yaml_lr, override):
    out = tmp_path / "run"
    argv = ["train", *SETS, "--out", str(out)]
    if yaml_lr is not None:
        config = tmp_path / "inf.yaml"
        config.write_text(f"optim: {{lr: {yaml_lr}}}\n")
        argv.insert(1, str(config))
    else:
        argv += ["--set", override]
    err = refusal(capsys, main(argv))
    assert "optim.lr=" in err and "must be a finite number" in err
    assert not out.exists()


@pytest.mark.parametrize("override, field", [("model.width=1000000000000", "model.width=1000000000000"),
                                             ("model.vocab_size=100000000000", "model.vocab_size=100000000000")])
def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(tmp_path, capsys, override, field):
    out = tmp_path / "run"
    err = refusal(capsys, main(["train", "--set", override, "--out", str(out)]))
    assert field in err and "parameters" in err and "GiB" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["bad.yaml", "bad.json"])
def test_a_binary_config_file_is_named(tmp_path, capsys, name):
    config = tmp_path / name
    config.write_bytes(bytes(range(256)))
    out = tmp_path / "run"
    err = refusal(capsys, main(["train", str(config), "--out", str(out)]))
    assert name in err and "UTF-8" in err
    assert not out.exists()


@pytest.mark.parametrize("n_tokens", [20, 300])  # training split short; validation split (last 10%) short
def test_data_shorter_than_one_sequence_names_data_path(tmp_path, capsys, n_tokens):
    data = tmp_path / "tiny.bin"
    (np.arange(n_tokens) % 256).astype(np.uint16).tofile(data)  # model.context=32: windows of 33 tokens
    out = tmp_path / "run"
    err = refusal(capsys, main(["train", *SETS, "--set", "data.source=file", "--set", f"data.path={data}",
                                "--out", str(out)]))
    assert "data.path=" in err and "tiny.bin" in err and "fewer than one sequence" in err
    assert not out.exists()


# ---------------------------------------------------------------- scaling sweep


@pytest.mark.parametrize("body, said", [("__import__('sys').exit(0)\n", "exited at import"),
                                        ("raise SystemExit(3)\n", "exited at import"),
                                        ("raise KeyboardInterrupt\n", "was interrupted at import")])
def test_an_experiment_that_exits_at_import_is_refused(tmp_path, body, said):
    """In a fresh process: an exit at import would otherwise end the command itself (status 0, silently)."""
    exp = tmp_path / "stops.py"
    exp.write_text("X = 1\n" + body)
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "scaling_cli", "sweep", "run", str(exp), "--store", str(store)],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert len(err.splitlines()) == 1 and f"experiment {exp} {said}" in err and "line 2" in err, err
    assert not store.exists()


def test_an_experiment_syntax_error_starts_at_its_line(tmp_path, capsys):
    exp = tmp_path / "broken.py"
    exp.write_text("X = 1\nSWEEP = product(\n")
    err = refusal(capsys, main(["sweep", "plan", str(exp)]))
    assert err.startswith(f"error: {exp}:2: SyntaxError: "), err


@pytest.mark.parametrize("option, value", [("--lease-ttl", "0"), ("--lease-ttl", "-5"), ("--lease-ttl", "nan"),
                                           ("--max-batch", "0"), ("--max-attempts", "0"), ("--workers", "0")])
def test_sweep_run_refuses_an_out_of_range_option(tmp_path, capsys, option, value):
    exp = write_experiment(tmp_path / "tiny.py", [1e-3])
    store = tmp_path / "store"
    err = refusal(capsys, main(["sweep", "run", str(exp), "--store", str(store), "--no-progress", option, value]))
    assert f"{option}=" in err
    assert not store.exists()


# ---------------------------------------------------------------- scaling analyze


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(experiment file, store) of one tiny lr sweep: three runs done, the lr=100 one diverged."""
    root = tmp_path_factory.mktemp("analyze")
    exp = write_experiment(root / "tiny_lr.py", [1e-3, 3e-3, 1e-2, 100.0],
                           extra="ANALYSIS = {'recipe': 'lr_transfer'}\n")
    store = root / "store"
    assert main(["sweep", "run", str(exp), "--store", str(store), "--workers", "1", "--no-progress",
                 "--jax-cache", str(shared_jax_cache())]) == 0
    states = {d.name: json.loads((d / "summary.json").read_text())["status"] for d in run_dirs(store)}
    assert sorted(states.values()) == ["diverged", "done", "done", "done"], states
    return exp, store


def run_dirs(store: Path) -> list[Path]:
    return sorted(d for d in store.iterdir() if d.is_dir() and not d.name.startswith("_"))


def copy_store(store: Path, to: Path, keep=lambda run: True) -> Path:
    """A copy of the store (its experiment manifests, the runs `keep` accepts), to damage or thin out."""
    to.mkdir()
    shutil.copytree(store / "_experiments", to / "_experiments")
    for run in run_dirs(store):
        if keep(run):
            shutil.copytree(run, to / run.name)
    return to


def status(run: Path) -> str:
    return json.loads((run / "summary.json").read_text())["status"]


@pytest.mark.parametrize("damaged", ["config.json", "run.json"])
def test_analyze_leaves_out_a_run_with_a_garbage_file(swept, tmp_path, capsys, damaged):
    exp, store = swept
    copy = copy_store(store, tmp_path / "store")
    victim = next(run for run in run_dirs(copy) if status(run) == "done")
    (victim / damaged).write_bytes(bytes(range(256)))
    out = tmp_path / "out"
    assert main(["analyze", str(exp), "--store", str(copy), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"left out 1 run(s) with unreadable files: {victim / damaged}" in printed
    analysed = pd.read_parquet(out / "runs.parquet")
    assert len(analysed) == 3 and victim.name not in set(analysed["run_id"])
    assert sum(json.loads((out / "fits.json").read_text())["runs"].values()) == 3


def test_analyze_refuses_an_all_diverged_store_writing_nothing(swept, tmp_path, capsys):
    exp, store = swept
    diverged = copy_store(store, tmp_path / "store", keep=lambda run: status(run) == "diverged")
    out = tmp_path / "out"
    err = refusal(capsys, main(["analyze", str(exp), "--store", str(diverged), "--out", str(out)]))
    assert "diverged" in err and str(diverged) in err
    assert not out.exists()


def test_a_failed_analyze_leaves_no_out_directory(swept, tmp_path, capsys):
    exp, store = swept
    out = tmp_path / "results" / "out"
    err = refusal(capsys, main(["analyze", str(exp), "--store", str(store), "--out", str(out), "--set", "y=nope"]))
    assert "'nope'" in err
    assert not (tmp_path / "results").exists()


def test_analyze_of_an_empty_store_says_so(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    out = tmp_path / "out"
    err = refusal(capsys, main(["analyze", "lr_transfer", "--store", str(store), "--out", str(out)]))
    assert f"no runs in {store}" in err
    assert not out.exists()

"""The `scaling` command: bad input gives one message naming the field and exit status 2, writing nothing."""

import json
import subprocess
import sys

import pytest

from scaling.cli import main
from tests.conftest import TINY


@pytest.mark.parametrize("args, field", [
    (["--set", "model.width=0"], "model.width"),
    (["--set", "model.width=100", "--set", "model.n_heads=3"], "model.n_heads"),
    (["--set", "model.colour=red"], "model.colour"),
    (["--set", "optim.name=sgdw"], "optim.name"),
    (["--set", "data.source=file", "--set", "data.path=/no/such/file.bin"], "data.path"),
    (["--set", "param.lr_mult.bias=2"], "param.lr_mult.bias"),
    (["--set", "run.steps=many"], "run.steps"),
])
def test_invalid_input_exits_2_naming_the_field(tmp_path, capsys, args, field):
    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unreadable_config_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_train_command_end_to_end(tmp_path):
    """The console entry point in a fresh process: trains, prints where the logs are, exit 0."""
    out = tmp_path / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "train", *sets, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "metrics.jsonl" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["status"] == "done"
    bad = subprocess.run([sys.executable, "-m", "scaling.cli", "train", "--set", "model.depth=-1", "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model.depth" in bad.stderr

"""What `scaling sweep plan` and `scaling sweep status` show, and what a status costs: coordinate and
derived-value columns, `--top 0` without an empty table, each run's files read once, no config parsed
and no JAX imported on a store whose finished runs are already verified."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sweeps.store
from scaling.api import logged_steps
from scaling_cli import main
from sweeps.experiment import expand, load_experiment
from sweeps.progress import coordinate_columns
from sweeps.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = """
from sweeps.spec import axis, derived, product, steps_for_tokens

BASE = {"model.kind": "mlp", "model.depth": 1, "model.context": 16, "model.window": 4, "run.batch_size": 4,
        "run.log_every": 5, "data.source": "synthetic"}
SWEEP = product(axis("model.width", [16, 32]), axis("tokens", [640, 1280]), axis("optim.lr", [1e-3, 4e-3, 1.6e-2]),
                derived("run.steps", steps_for_tokens()))
"""


@pytest.fixture
def views_store(tmp_path):
    """12 registered runs of a 2 x 2 x 3 sweep: 8 faked finished (metrics rows as training logs them), one
    failed, the rest pending."""
    path = tmp_path / "views.py"
    path.write_text(textwrap.dedent(EXPERIMENT))
    experiment = load_experiment(path)
    runs = expand(experiment)
    store = Store(tmp_path / "store")
    ids = store.register(experiment, runs)
    for i, (run_id, run) in enumerate(zip(ids, runs)):
        if i >= 8:
            continue
        steps = logged_steps(run.config.run)
        loss = 3.0 + i / 10
        with open(store.run_dir(run_id) / "metrics.jsonl", "w") as f:
            for s in steps:
                f.write(json.dumps({"step": s, "tokens": s * 64, "train_loss": loss, "val_loss": loss}) + "\n")
        (store.run_dir(run_id) / "summary.json").write_text(json.dumps(
            {"status": "done", "steps": steps[-1], "tokens": steps[-1] * 64, "final_val_loss": loss,
             "best_val_loss": loss, "wall_time_s": 1.0}))
        store.write_status(run_id, "done", attempts=1, steps=steps[-1])
    store.write_status(ids[8], "failed", attempts=3, error="RuntimeError: boom")
    return path, store, ids, runs


def _status(capsys, store: Store, *extra: str) -> str:
    assert main(["sweep", "status", "--store", str(store.root), *extra]) == 0
    return capsys.readouterr().out


def test_status_shows_coordinate_columns(views_store, capsys):
    _, store, ids, runs = views_store
    out = _status(capsys, store, "--top", "3")
    header = next(line for line in out.splitlines() if "state" in line and "run id" in line)
    for column in ("width", "tokens", "lr", "state", "val loss", "best", "trained", "run id"):
        assert column in header, column
    assert header.index("width") < header.index("tokens") < header.index(" lr ")  # the sweep's axis order
    best = next(line for line in out.splitlines() if ids[0] in line)  # lowest loss: run 0
    assert best.split()[:6] == ["16", "640", "1e-3", "done", "3.0000", "3.0000"], best
    assert "best 3 of 8 finished runs" in out and "1 of 1 failed" in out and "failed " + ids[8] in out


def test_top_zero_prints_counts_and_no_table(views_store, capsys):
    _, store, _, _ = views_store
    out = _status(capsys, store, "--top", "0")
    assert out.splitlines()[0].startswith("12 runs: pending 3, running 0, done 8, diverged 0, failed 1")
    assert len(out.strip().splitlines()) == 1 and "run id" not in out  # the counts line only


def test_status_reads_each_file_once_and_parses_no_config(views_store, capsys, monkeypatch):
    """The cost of a status is a count of operations, not seconds: on a store whose finished runs are
    verified (the cache of the first call), each run's run.json and status and each finished run's
    summary.json are read once, metrics.jsonl never, and no config is parsed."""
    _, store, ids, _ = views_store
    _status(capsys, store)  # verifies the finished runs once (their verdicts cached in _cache/verified.json)
    reads: dict[str, int] = {}
    real_read_text = Path.read_text

    def counting_read_text(self, *args, **kwargs):
        reads[self.name] = reads.get(self.name, 0) + 1
        return real_read_text(self, *args, **kwargs)

    parses = []
    monkeypatch.setattr(Path, "read_text", counting_read_text)
    monkeypatch.setattr(sweeps.store, "from_dict", lambda *a, **k: parses.append(a) or pytest.fail("config parsed"))
    _status(capsys, store)
    assert reads.get("run.json", 0) <= len(ids) and reads.get("status", 0) <= len(ids)
    assert reads.get("summary.json", 0) <= 8 and reads.get("metrics.jsonl", 0) == 0 and not parses


def test_status_on_a_verified_store_imports_no_jax(views_store, capsys):
    """What keeps `scaling sweep status` well under a second: neither JAX nor analysis is imported."""
    _, store, _, _ = views_store
    _status(capsys, store)  # verify once
    code = ("import sys\nfrom scaling_cli import main\n"
            f"assert main(['sweep', 'status', '--store', {str(store.root)!r}]) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'analysis', 'scipy', 'matplotlib')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def test_plan_shows_coordinates_derived_values_and_state(views_store, capsys):
    path, store, ids, runs = views_store
    assert main(["sweep", "plan", str(path), "--store", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "derived: run.steps" in lines[0]
    assert lines[1].split() == ["width", "tokens", "lr", "steps", "(derived)", "state", "run", "id"]
    rows = {line.split()[-1]: line.split() for line in lines[2:] if line.strip()}
    assert set(rows) == set(ids)
    for run_id, run in zip(ids, runs):
        width, tokens, lr, steps, state = rows[run_id][:5]
        assert int(steps) == run.config.run.steps == round(int(tokens) / (4 * 16))  # tokens / (B * T)
        assert int(width) == run.config.model.width
        assert state == store.status(run_id)["state"]


def test_coordinate_column_names_are_short_unless_ambiguous():
    coords = [{"model.kind": "mlp", "param.kind": "mup", "model.width": 32}, {"tokens": 5, "optim.lr": 1e-3}]
    assert coordinate_columns(coords, ["model.width"], reserved=("tokens",)) == {
        "model.width": "width", "model.kind": "model.kind", "optim.lr": "lr", "param.kind": "param.kind",
        "tokens": "tokens"}
    assert coordinate_columns([{"tokens": 5}], reserved=("tokens",)) == {"tokens": "tokens"}

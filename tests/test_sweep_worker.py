"""The worker loop in-process: outcomes recorded as data, retries, preemption, repairs of damaged run dirs.

All runs share one program (tiny MLP, only lr/seed differ), so the module compiles once."""

import json
import shutil
from pathlib import Path

import pytest

from scaling_cli import main
from sweeps.experiment import expand, load_experiment
from sweeps.store import Store
from sweep_fixtures import StopAfter, write_experiment
from sweeps.worker import EXIT_DONE, EXIT_FAILED, EXIT_REQUEUE, Worker, WorkerOptions

OPTIONS = WorkerOptions(jax_cache=None, poll_s=0.1)


def _register(tmp_path: Path, lrs, seeds=(0,), name="exp", **kw):
    path = write_experiment(tmp_path / f"{name}.py", lrs, seeds, **kw)
    exp = load_experiment(path)
    store = Store(tmp_path / "store")
    return store, store.register(exp, expand(exp))


def _rows(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _result(store: Store, run_id: str):
    summary = {k: v for k, v in store.summary(run_id).items() if k != "wall_time_s"}
    return _rows(store.run_dir(run_id)), summary


def _starts(store: Store, run_id: str):
    return [e for e in store.events(run_id) if e["event"] == "start"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A finished 2-run sweep: the reference every repaired or resumed run must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("clean")
    store, ids = _register(tmp, [1e-3, 3e-3])
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    return store, ids


def test_diverged_run_in_the_middle_does_not_stop_the_sweep(tmp_path):
    store, ids = _register(tmp_path, [1e-3, 30.0, 3e-3], base={"run.steps": 30})
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    states = [store.status(i)["state"] for i in ids]
    assert states == ["done", "diverged", "done"]
    diverged = store.summary(ids[1])
    assert diverged["status"] == "diverged" and diverged["diverged_step"] < 30
    assert all(store.inspect(i).finished() for i in ids)  # diverged is final and consistent
    assert all(len(_starts(store, i)) == 1 for i in ids)


def test_exceptions_are_recorded_and_retried_up_to_max_attempts(tmp_path, monkeypatch):
    import scaling.train

    store, ids = _register(tmp_path, [1e-3, 3e-3])
    train_runs = scaling.train.train_runs

    def broken(*args, **kwargs):
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(scaling.train, "train_runs", broken)  # every attempt now raises
    log: list[str] = []
    options = WorkerOptions(jax_cache=None, poll_s=0.1, max_attempts=2)
    assert Worker(store, ids, options, log=log.append).run() == EXIT_FAILED
    for run_id in ids:
        status = store.status(run_id)
        assert status["state"] == "failed" and status["attempts"] == 2
        assert "device fell over" in status["error"] and "Traceback" in status["traceback"]
        assert len(_starts(store, run_id)) == 2
    assert any("failed (attempt 2/2)" in m for m in log)
    monkeypatch.setattr(scaling.train, "train_runs", train_runs)  # fixed: a later sweep finishes them
    assert Worker(store, ids, WorkerOptions(jax_cache=None, max_attempts=3)).run() == EXIT_DONE
    assert [store.status(i)["state"] for i in ids] == ["done", "done"]


def test_preemption_checkpoints_returns_75_and_resumes_exactly(tmp_path, clean):
    ref_store, ref_ids = clean
    store, ids = _register(tmp_path, [1e-3, 3e-3])
    assert ids == ref_ids
    assert Worker(store, ids, OPTIONS, stop=StopAfter(8)).run() == EXIT_REQUEUE
    first = ids[0]
    status = store.status(first)
    assert status["state"] == "pending" and 0 < status["preempted_at"] < 12
    assert store.inspect(first).checkpoints[-1] == status["preempted_at"]
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    starts = _starts(store, first)
    assert [s["from_step"] for s in starts] == [0, status["preempted_at"]]  # resumed, not restarted
    for run_id in ids:
        assert _result(store, run_id) == _result(ref_store, run_id)


def test_adding_points_trains_only_the_new_runs(tmp_path, clean):
    ref_store, ref_ids = clean
    shutil.copytree(ref_store.root, tmp_path / "store")
    store, ids = _register(tmp_path, [1e-3, 3e-3, 1e-2])
    assert ids[:2] == ref_ids
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    assert [len(_starts(store, i)) for i in ids] == [1, 1, 1]  # the old runs' single start is from the copy
    assert store.status(ids[2])["state"] == "done"


def _corrupt_middle_line(d: Path):
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _truncate_last_line(d: Path):
    text = (d / "metrics.jsonl").read_text().rstrip("\n")
    (d / "metrics.jsonl").write_text(text[: len(text) - 25])


def _remove_summary(d: Path):
    (d / "summary.json").unlink()


def _garble_summary(d: Path):
    (d / "summary.json").write_text('{"status": "do')


@pytest.mark.parametrize("damage, where", [
    (_corrupt_middle_line, "metrics.jsonl: line 4"),
    (_truncate_last_line, "metrics.jsonl"),
    (_remove_summary, "summary.json is missing"),
    (_garble_summary, "summary.json is unreadable"),
])
def test_damaged_finished_run_is_reported_and_redone_exactly(tmp_path, clean, damage, where):
    ref_store, ref_ids = clean
    shutil.copytree(ref_store.root, tmp_path / "store")
    store = Store(tmp_path / "store")
    run_id = ref_ids[1]
    damage(store.run_dir(run_id))
    health = store.inspect(run_id)
    assert not health.finished() and any(where in p and str(store.run_dir(run_id)) in p for p in health.problems)
    log: list[str] = []
    assert Worker(store, ref_ids, OPTIONS, log=log.append).run() == EXIT_DONE
    assert any(where in m for m in log)  # reported, with the path
    repair = [e for e in store.events(run_id) if e["event"] == "repair"]
    assert len(repair) == 1 and repair[0]["problems"] == health.problems
    assert _result(store, run_id) == _result(ref_store, run_id)
    assert len(_starts(store, ref_ids[0])) == 1  # the intact run was not touched


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, clean):
    ref_store, ref_ids = clean
    store, ids = _register(tmp_path, [1e-3, 3e-3])
    assert Worker(store, ids, OPTIONS, stop=StopAfter(12)).run() == EXIT_REQUEUE
    run_id = ids[0]
    health = store.inspect(run_id)
    newest = health.checkpoints[-1]
    assert len(health.checkpoints) == 2 and health.state == "pending"
    for f in (store.run_dir(run_id) / "ckpt" / str(newest)).rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    log: list[str] = []
    assert Worker(store, ids, OPTIONS, log=log.append).run() == EXIT_DONE
    assert any(f"ckpt/{newest}" in m and "unreadable" in m for m in log)
    assert _result(store, run_id) == _result(ref_store, run_id)


def test_status_command_and_tables(tmp_path, clean, capsys):
    ref_store, ref_ids = clean
    assert main(["sweep", "status", "--store", str(ref_store.root)]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "done 2" in out and ref_ids[0] in out
    assert main(["sweep", "consolidate", "--store", str(ref_store.root)]) == 0
    import pandas as pd

    runs = pd.read_parquet(ref_store.root / "runs.parquet")
    assert sorted(runs["run_id"]) == sorted(ref_ids) and set(runs["state"]) == {"done"}
    assert main(["sweep", "status", "--store", str(tmp_path / "nope")]) == 2

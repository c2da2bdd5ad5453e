"""Tracker mirrors of metrics.jsonl (scaling.trackers): namespaced keys, W&B offline, TensorBoard read back,
resume without duplicate steps, sweep tags, and bad choices refused before anything is written."""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

from scaling import trackers
from scaling.api import ConfigError, Tracking, read_jsonl, train
from scaling.logs import MetricsLog
from scaling.trackers import TrackedLog, Trackers, metrics_log, tracker_key, tracker_scalars
from tests.conftest import tiny_config


def test_keys_are_namespaced_by_what_they_are():
    expected = {
        "step": None, "tokens": "train/tokens", "train_loss": "train/loss", "val_loss": "eval/loss",
        "val_bpb": "eval/bpb", "lr": "optim/lr", "grad_norm": "optim/grad_norm",
        "opnorm/param/blocks.wq/1": "norms/blocks.wq/1/param", "opnorm/update/embed": "norms/embed/update",
        "opnorm/param/embed.T": "norms/embed.T/param", "norm/update/hidden": "norms/by_role/hidden/update",
        "rms/param/output": "norms/by_role/output/rms_param", "something_new": "something_new",
    }
    assert {k: tracker_key(k) for k in expected} == expected


def test_scalars_keep_numbers_only():
    row = {"step": 3, "train_loss": 2.5, "val_bpb": float("nan"), "note": "x", "flag": True}
    out = tracker_scalars(row)
    assert set(out) == {"train/loss", "eval/bpb"} and out["train/loss"] == 2.5


def test_no_tracker_is_a_plain_metrics_log(tmp_path):
    assert type(metrics_log(tmp_path / "m.jsonl", None, tiny_config())) is MetricsLog
    assert type(metrics_log(tmp_path / "m.jsonl", Tracking(), tiny_config())) is MetricsLog


def test_unknown_tracker_and_missing_package_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="--track='wandb,mlflow'.*'mlflow'"):
        trackers.parse_kinds("wandb,mlflow")
    assert trackers.parse_kinds("none") == () and trackers.parse_kinds("WandB, tensorboard") == ("wandb", "tensorboard")
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"--track wandb: .*scaling\[wandb\]"):
        trackers.check_available(("wandb",))


def test_a_failing_tracker_warns_once_and_is_dropped(tmp_path):
    class Broken:
        def log(self, step, record):
            raise OSError("disk full")

        def close(self):
            raise AssertionError("a dropped tracker is not closed")

    fanned = Trackers({"broken": Broken()}, tmp_path)
    with pytest.warns(UserWarning, match="broken tracker failed to log.*metrics.jsonl is complete"):
        fanned.log(1, {"train_loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fanned.log(2, {"train_loss": 1.0})
        fanned.close()


class FakeWandb:
    """The wandb module at its boundary: init(...) -> a run with log(data, step) and finish()."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def module(self) -> types.ModuleType:
        m = types.ModuleType("wandb")
        m.Settings = lambda **kw: kw
        m.init = self.init
        return m

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, data, step):
                fake.logged.append((step, dict(data)))

            def finish(self):
                fake.finished += 1

        return Run()


def _tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_resumed_run_mirrors_metrics_once_per_step(tmp_path, monkeypatch):
    """One tiny training, preempted at step 6 and resumed: W&B (at its boundary) and TensorBoard (read back
    from the event files) hold exactly metrics.jsonl's rows, each step once, in one tracker run per run id;
    events a killed process wrote after the checkpoint are purged."""
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    run_dir = tmp_path / "w32-lr1e-2-abcdef12"
    tracking = Tracking(("wandb", "tensorboard"), project="p", tags=("sweep:demo",), context={"sweep": "demo"})
    calls = {"n": 0}

    def stop_after_six():
        calls["n"] += 1
        return calls["n"] == 6

    assert train(tiny_config(), run_dir, should_stop=stop_after_six, tracking=tracking)["steps"] == 6
    with SummaryWriter(str(run_dir / "tensorboard")) as killed:  # a process killed after the checkpoint
        killed.add_scalar("train/loss", -1.0, global_step=7)
    assert train(tiny_config(), run_dir, tracking=tracking)["status"] == "done"

    rows, _ = read_jsonl(run_dir / "metrics.jsonl")
    assert [s for s, _ in fake.logged] == [r["step"] for r in rows]  # every row once, in order
    assert [d for _, d in fake.logged] == [tracker_scalars(r) for r in rows]
    logged_keys = set().union(*(d for _, d in fake.logged))
    assert {"train/loss", "eval/loss", "optim/lr", "norms/by_role/hidden/param"} <= logged_keys
    assert len(fake.inits) == 2 and fake.finished == 2
    for kw in fake.inits:  # one W&B run per run id, resumed; the run's config and the sweep's context
        assert (kw["id"], kw["name"], kw["resume"], kw["project"]) == (run_dir.name, run_dir.name, "allow", "p")
        assert kw["tags"] == ["sweep:demo"] and kw["config"]["sweep"] == "demo" and kw["config"]["model.width"] == 32
        assert kw["dir"] == str(run_dir)

    scalars = _tb_scalars(run_dir / "tensorboard")
    want = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in want]  # step 7 once: the killed event purged
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in want], rel=1e-6)
    evals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    assert [s for s, _ in scalars["eval/loss"]] == [s for s, _ in evals]


def test_wandb_offline_run_holds_the_namespaced_keys(tmp_path, monkeypatch):
    """A real W&B run in offline mode (WANDB_MODE=offline), fed like metrics.jsonl: its offline directory is
    named by the run id and its transaction log holds the namespaced keys and the sweep's context."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_dir = tmp_path / "w16-lr3e-3-0badc0de"
    run_dir.mkdir()
    log = TrackedLog(run_dir / "metrics.jsonl", Tracking(("wandb",), project="offline-test", tags=("sweep:demo",),
                                                         context={"sweep": "demo", "coord/optim.lr": 3e-3}), {})
    log.restart_at(-1)
    log.append({"step": 0, "tokens": 0, "val_loss": 5.5, "val_bpb": 7.9, "opnorm/param/blocks.wq/0": 1.0})
    log.append({"step": 1, "tokens": 64, "train_loss": 5.4, "lr": 1e-3, "grad_norm": 0.5})
    log.close()
    import wandb

    wandb.teardown()  # finish() returns before the service has flushed the offline file; teardown (as at exit) waits
    runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_dir.name}"))
    assert len(runs) == 1
    data = (runs[0] / f"run-{run_dir.name}.wandb").read_bytes()
    for key in ("train/loss", "eval/loss", "eval/bpb", "optim/lr", "optim/grad_norm", "norms/blocks.wq/0/param",
                "coord/optim.lr", "sweep:demo"):
        assert key.encode() in data, key
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_sweep_worker_tags_each_run_with_the_sweep_and_its_coordinates(tmp_path):
    from sweeps.experiment import Experiment, expand
    from sweeps.spec import axis, product
    from sweeps.store import Store
    from sweeps.worker import Worker

    experiment = Experiment("demo", product(axis("model.width", [16]), axis("optim.lr", [1e-3, 2e-3])),
                            {"model.kind": "mlp"})
    store = Store(tmp_path / "store")
    ids = store.register(experiment, expand(experiment), track={"kinds": ["tensorboard"], "project": None, "dir": None})
    manifest = store.manifest("demo")
    worker = Worker(store, ids, track=manifest["track"], experiment="demo")
    t = worker.tracking(ids[1])
    assert t.kinds == ("tensorboard",) and t.run_id == ids[1] and t.project == "demo"
    assert t.tags == ("sweep:demo", "model.width=16", "optim.lr=0.002")
    assert t.context == {"sweep": "demo", "run_id": ids[1], "coord/model.width": 16, "coord/optim.lr": 0.002}
    assert Worker(store, ids, experiment="demo").tracking(ids[0]) is None  # no --track: no tracker


def test_sweep_run_refuses_an_unknown_tracker_before_writing(tmp_path, capsys):
    from scaling_cli import main

    store = tmp_path / "store"
    assert main(["sweep", "run", "quickstart", "--store", str(store), "--track", "wandb,mlflow"]) == 2
    assert "--track" in capsys.readouterr().err and not store.exists()


def test_train_refuses_an_unknown_tracker_before_writing(tmp_path, capsys):
    from scaling_cli import main

    out = tmp_path / "run"
    assert main(["train", "--set", "data.source=synthetic", "--out", str(out), "--track", "tensorbord"]) == 2
    assert "--track='tensorbord'" in capsys.readouterr().err and not out.exists()


def test_a_rerun_without_track_keeps_the_sweeps_trackers(tmp_path, monkeypatch):
    """Regression: `sweep run` without --track recorded "no trackers", so resuming a tracked sweep silently
    stopped mirroring it; now a rerun keeps the recorded choice and `--track none` turns it off."""
    from scaling_cli import main
    from sweeps.store import Store

    recorded = []

    class Registered(Exception):
        pass

    real_register = Store.register

    def register(self, experiment, runs, log=print, track=None):
        ids = real_register(self, experiment, runs, log=log, track=track)
        recorded.append(self.manifest(experiment.name)["track"])
        raise Registered  # stop before any worker starts

    monkeypatch.setattr(Store, "register", register)
    store = str(tmp_path / "store")
    for flags in (["--track", "tensorboard"], [], ["--track", "none"], []):
        with pytest.raises(Registered):
            main(["sweep", "run", "quickstart", "--store", store, "--no-progress", *flags])
    kinds = [t and t["kinds"] for t in recorded]
    assert kinds == [["tensorboard"], ["tensorboard"], None, None]

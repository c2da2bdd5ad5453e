"""Loading stores: states and flags of done/diverged/failed/crashed runs, corrupt lines, flattening,
the parquet cache (reuse, incremental refresh, atomic consolidation) and several stores at once."""

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import load
from analysis.errors import AnalysisError, LoadWarning
from analysis.synthetic import base_config, curve_rows, write_run


def _summary(status="done", final=3.0, steps=40):
    return {"status": status, "steps": steps, "tokens": steps * 32 * 128, "final_train_loss": final,
            "final_val_loss": final if status == "done" else float("nan"), "best_val_loss": final,
            "wall_time_s": 1.0, "n_params": 1000, "n_params_nonembedding": 800, "flops_per_token": 6000,
            "diverged_step": 20 if status == "diverged" else None,
            "diverge_reason": "loss is NaN" if status == "diverged" else None}


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    write_run(s / "done1", base_config(width=64, lr=1e-3), curve_rows(3.0, 40, 32), _summary(), {"state": "done"})
    write_run(s / "done_nostatus", base_config(width=128, lr=2e-3), curve_rows(2.9, 40, 32), _summary(final=2.9))
    write_run(s / "div1", base_config(width=64, lr=1.0), curve_rows(3.0, 40, 32, diverge_step=20),
              _summary("diverged"), {"state": "diverged"})
    write_run(s / "failed1", base_config(width=256), curve_rows(3.0, 40, 32)[:2], None,
              {"state": "failed", "error": "RESOURCE_EXHAUSTED: out of memory", "traceback": "Traceback ..."})
    write_run(s / "running1", base_config(width=256), curve_rows(3.0, 40, 32)[:3], None, {"state": "running"})
    # a crash: status still says running... no, it claims done, but summary.json was never written
    write_run(s / "crashed1", base_config(width=512), curve_rows(3.0, 40, 32)[:5], None, {"state": "done"})
    with open(s / "crashed1" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 60, "train_loss": 2.')  # truncated last line
    (s / "not_a_run").mkdir()  # no run files: ignored
    return s


def test_states_and_flags(store):
    with pytest.warns(LoadWarning, match=r"crashed1/metrics.jsonl: skipped 1 corrupt line\(s\) \(line 6\)"):
        runs, curves = load.load_store(store)
    st = runs.set_index("run_id")["state"].to_dict()
    assert st == {"crashed1": "incomplete", "div1": "diverged", "done1": "done", "done_nostatus": "done",
                  "failed1": "failed", "running1": "running"}
    r = runs.set_index("run_id")
    assert bool(r.loc["div1", "diverged"]) and not bool(r.loc["done1", "diverged"])
    assert r.loc["failed1", "error"].startswith("RESOURCE_EXHAUSTED")
    assert "traceback" not in runs.columns  # kept out of the compact table
    assert r.loc["crashed1", "n_bad_lines"] == 1 and r.loc["done1", "n_bad_lines"] == 0
    assert r.loc["crashed1", "n_metric_rows"] == 5
    assert r.loc["crashed1", "last_step"] == curve_rows(3.0, 40, 32)[4]["step"]
    assert math.isnan(r.loc["div1", "final_val_loss"]) and r.loc["div1", "diverged_step"] == 20
    # every metrics line except the corrupt one is a curve row; diverged NaN losses survive
    n_lines = sum(1 for d in store.iterdir() if (d / "metrics.jsonl").exists()
                  for line in open(d / "metrics.jsonl") if line.strip())
    assert len(curves) == n_lines - 1
    div = curves[curves["run_id"] == "div1"]
    assert div["train_loss"].isna().any() and div["train_loss"].notna().any()


@pytest.mark.filterwarnings("ignore::analysis.errors.LoadWarning")
def test_flattened_config_columns(store):
    runs, _ = load.load_store(store, write=False)
    for col in ("model.width", "optim.lr", "param.lr_mult.hidden", "run.batch_size", "_meta.git_sha"):
        assert col in runs.columns, col
    assert runs["model.width"].dtype.kind == "i"
    assert json.loads(runs["optim.decay_roles"].iloc[0]) == ["embedding", "hidden", "output"]
    assert list(runs.columns[:3]) == ["run_id", "store", "state"]


def test_flatten_nested_and_lists():
    assert load.flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": "[1, 2]"}


def test_cache_is_reused_and_refreshed_incrementally(store, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        runs0, curves0 = load.load_store(store)
    assert (store / "runs.parquet").exists() and (store / "curves.parquet").exists()
    calls = []
    real = load._read_run_arrow
    monkeypatch.setattr(load, "_read_run_arrow", lambda d: calls.append(Path(d).name) or real(d))
    runs1, curves1 = load.load_store(store)
    assert calls == []  # nothing changed: served from parquet
    pd.testing.assert_frame_equal(runs0, runs1)
    assert len(curves1) == len(curves0)
    # the running run finishes: only it is re-read
    write_run(store / "running1", base_config(width=256), curve_rows(2.5, 40, 32), _summary(final=2.5),
              {"state": "done"})
    os.utime(store / "running1" / "summary.json", ns=(1, 10**18))  # distinct mtime even on coarse clocks
    runs2, curves2 = load.load_store(store)
    assert calls == ["running1"]
    assert runs2.set_index("run_id").loc["running1", "state"] == "done"
    assert (curves2["run_id"] == "running1").sum() == len(curve_rows(2.5, 40, 32))
    # a run directory removed from disk disappears from the tables
    for f in (store / "failed1").iterdir():
        f.unlink()
    (store / "failed1").rmdir()
    runs3, curves3 = load.load_store(store)
    assert "failed1" not in set(runs3["run_id"]) and "failed1" not in set(curves3["run_id"].astype(str))


def test_write_tables_consolidates_atomically(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        runs, curves = load.write_tables(store)
    meta_r = pq.read_schema(store / "runs.parquet").metadata
    meta_c = pq.read_schema(store / "curves.parquet").metadata
    assert meta_r[b"analysis.build_id"] == meta_c[b"analysis.build_id"]
    assert not [p for p in store.iterdir() if p.name.endswith(".tmp")]
    assert len(pq.read_table(store / "runs.parquet")) == len(runs) == 6
    # a torn pair (one file replaced by a foreign build) is detected and rebuilt, not trusted
    pq.write_table(pq.read_table(store / "curves.parquet").replace_schema_metadata({}), store / "curves.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        runs2, curves2 = load.load_store(store, refresh="auto")
    assert len(curves2) == len(curves)


def test_refresh_never_trusts_cache_and_garbage_cache_is_rebuilt(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        load.load_store(store)
    write_run(store / "new1", base_config(), curve_rows(3.0, 40, 32), _summary(), {"state": "done"})
    runs, _ = load.load_store(store, refresh="never")
    assert "new1" not in set(runs["run_id"])
    (store / "runs.parquet").write_bytes(b"not parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        runs, _ = load.load_store(store)
    assert "new1" in set(runs["run_id"])


def test_several_stores_and_curve_columns(store, tmp_path):
    other = tmp_path / "other"
    write_run(other / "done1", base_config(width=64), curve_rows(3.1, 40, 32), _summary(final=3.1), {"state": "done"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadWarning)
        runs, curves = load.load_store([store, other], curve_columns=["train_loss"])
    assert set(runs["store"]) == {str(store), str(other)}
    assert (runs["run_id"] == "done1").sum() == 2  # same id in two stores: told apart by `store`
    assert list(curves.columns) == ["store", "run_id", "step", "train_loss"]


def test_bad_inputs_give_one_clear_error(tmp_path):
    with pytest.raises(AnalysisError, match="is not a directory"):
        load.load_store(tmp_path / "missing")
    with pytest.raises(AnalysisError, match="refresh="):
        load.load_store(tmp_path, refresh="sometimes")
    runs, curves = load.load_store(tmp_path, write=False)  # an empty store is valid: no runs
    assert runs.empty and curves.empty


def test_read_run_and_nan_lines_parse_without_warning(tmp_path):
    d = tmp_path / "r"
    rows = curve_rows(3.0, 20, 8)
    rows[1]["train_loss"] = float("inf")
    write_run(d, base_config(), rows, _summary(steps=20), {"state": "done"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoadWarning)  # NaN/Infinity tokens are valid data, not corruption
        row, curves = load.read_run(d)
    assert row["state"] == "done" and len(curves) == len(rows)
    assert np.isinf(curves["train_loss"].iloc[1])
    assert curves["step"].dtype == np.int64


def two_experiment_store(root: Path) -> Path:
    """Runs registered by two experiments the way the sweep runner writes them (run.json, manifests); run
    `shared` belongs to both (registered by lr_sweep, listed again in width_sweep's manifest)."""
    store = root / "store"
    runs = {"lr-a": ("lr_sweep", {"optim.lr": 1e-3, "tokens_budget": 1e6}),
            "lr-b": ("lr_sweep", {"optim.lr": 2e-3, "tokens_budget": 1e6}),
            "shared": ("lr_sweep", {"optim.lr": 4e-3, "tokens_budget": 2e6}),
            "w-a": ("width_sweep", {"model.width": 64}), "w-b": ("width_sweep", {"model.width": 128})}
    for rid, (exp, coords) in runs.items():
        d = write_run(store / rid, base_config(lr=coords.get("optim.lr", 3e-3), width=coords.get("model.width", 128)),
                      curve_rows(3.0, 40, 32), _summary(), {"state": "done"})
        (d / "run.json").write_text(json.dumps({"id": rid, "schema": 1, "digest": "0" * 64, "coords": coords,
                                                "experiment": exp, "config": {}}))
    (store / "_experiments").mkdir()
    for name, ids in (("lr_sweep", ["lr-a", "lr-b", "shared"]), ("width_sweep", ["w-a", "w-b", "shared"])):
        (store / "_experiments" / f"{name}.json").write_text(json.dumps({"name": name, "analysis": None, "runs": ids}))
    return store


def test_runs_table_has_the_experiment_and_the_swept_coordinates(tmp_path):
    store = two_experiment_store(tmp_path)
    runs, curves = load.load_store(store)
    r = runs.set_index("run_id")
    assert list(runs.columns[:4]) == ["run_id", "store", "state", "experiment"]
    assert r.loc["lr-a", "experiment"] == "lr_sweep" and r.loc["w-b", "experiment"] == "width_sweep"
    assert r.loc["lr-b", "coord.optim.lr"] == 2e-3 and r.loc["shared", "coord.tokens_budget"] == 2e6  # a free variable
    assert np.isnan(r.loc["lr-a", "coord.model.width"]) and r.loc["w-a", "coord.model.width"] == 64
    assert "_experiments" not in set(runs["run_id"])  # the store's own directories are not runs
    assert load.experiments(store) == ["lr_sweep", "width_sweep"]
    sel, sel_curves = load.select_experiment(runs, curves, "width_sweep", store)
    assert sorted(sel["run_id"]) == ["shared", "w-a", "w-b"]  # by its manifest, as `sweep status` selects
    assert set(sel_curves["run_id"].astype(str)) == {"shared", "w-a", "w-b"}
    assert set(sel_curves["run_id"].cat.categories) == {"shared", "w-a", "w-b"}
    with pytest.raises(AnalysisError, match=r"no experiment 'nope' .*\(recorded: lr_sweep, width_sweep\)"):
        load.select_experiment(runs, curves, "nope", store)
    (store / "_experiments" / "lr_sweep.json").unlink()  # no manifest: run.json's experiment decides
    sel, _ = load.select_experiment(runs, curves, "lr_sweep", store)
    assert sorted(sel["run_id"]) == ["lr-a", "lr-b", "shared"]


def test_cache_written_before_run_json_was_read_is_refreshed(tmp_path):
    store = two_experiment_store(tmp_path)
    runs, _ = load.load_store(store)
    assert runs["experiment"].notna().all()
    # a runs.parquet whose signatures predate run.json (4 files) is re-read, not trusted
    t = pq.read_table(store / "runs.parquet")
    old = [s.rsplit("|", 1)[0] for s in t["_signature"].to_pylist()]
    t = t.drop_columns(["experiment"]).set_column(t.schema.get_field_index("_signature") - 1, "_signature",
                                                  pa.array(old))
    pq.write_table(t.replace_schema_metadata(pq.read_schema(store / "runs.parquet").metadata), store / "runs.parquet")
    runs, _ = load.load_store(store)
    assert runs["experiment"].notna().all()

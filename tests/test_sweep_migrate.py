"""Versioned run identity in a store: ids survive an added config field, stores written before identity
schemas are re-keyed by `scaling sweep migrate` (idempotent, crash-safe, refused while workers run, and
until then `sweep run` refuses them), and a data file that has gone leaves finished runs untouched.

The schema 0 stores are made the way the code before identity schemas (51756ed) left them: trained with
today's code, then rewritten with that code's config (run.eval_batches instead of run.eval_tokens /
run.eval_seed, none of the fields added since), its run ids (sha8 of the full resolved config) and
run.json without "schema". All runs share one tiny program, so the module compiles it once."""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.config import ConfigError
from scaling.identity import IDENTITY_SCHEMA, canonical_json
from scaling_cli import main
from sweep_fixtures import StopAfter, shared_jax_cache, write_experiment
from sweeps import run_id as rid
from sweeps.experiment import expand, load_experiment
from sweeps.lease import Lease
from sweeps.migrate import migrate
from sweeps.store import MIGRATION_JOURNAL, Store
from sweeps.worker import EXIT_DONE, EXIT_REQUEUE, Worker, WorkerOptions

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = WorkerOptions(jax_cache=None, poll_s=0.1)
BT = 8 * 32  # TINY_BASE's run.batch_size x model.context: the tokens of one old validation batch


def _experiment(tmp: Path, name: str, lrs, eval_batches: int, **kw) -> Path:
    """Validation of eval_batches old batches: what the old code evaluated, so the schema 0 copy is true."""
    return write_experiment(tmp / f"{name}.py", lrs, base={"run.eval_tokens": eval_batches * BT, **kw.pop("base", {})},
                            **kw)


def _register(root: Path, path: Path) -> tuple[Store, list[str]]:
    exp = load_experiment(path)
    store = Store(root)
    return store, store.register(exp, expand(exp))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _starts(store: Store, run_id: str) -> list[dict]:
    return [e for e in store.events(run_id) if e["event"] == "start"]


# ---------------------------------------------------------------- schema 0, as the old code left a store


def _legacy_config(config: dict) -> dict:
    cfg = copy.deepcopy(config)
    run, context = cfg["run"], cfg["model"]["context"]
    tokens, seed = run.pop("eval_tokens"), run.pop("eval_seed")
    run.pop("eval_batch_size")
    assert tokens % (run["batch_size"] * context) == 0 and seed == run["data_seed"], "not an old validation set"
    run["eval_batches"] = tokens // (run["batch_size"] * context)
    del cfg["optim"]["wd_coupling"], cfg["data"]["val_path"]
    return cfg


def _write_schema0(d: Path, rec: dict, legacy: dict) -> str:
    """Rewrite run directory d as schema 0 with config `legacy`; returns its old-style id (not renamed)."""
    full = hashlib.sha256(canonical_json(legacy).encode()).hexdigest()  # the schema 0 id hashed everything
    old_id = rid.run_id(rec["coords"], full)
    (d / "run.json").write_text(json.dumps({"id": old_id, "digest": full, "coords": rec["coords"],
                                            "experiment": rec["experiment"], "config": legacy}))
    if (d / "config.json").exists():
        meta = json.loads((d / "config.json").read_text())["_meta"]
        (d / "config.json").write_text(json.dumps({**legacy, "_meta": meta}))
    return old_id


def _to_schema0(root: Path) -> dict[str, str]:
    """{old id: today's id} after rewriting every run of the store (and its manifests) as schema 0."""
    store, old_of = Store(root), {}
    for run_id in store.run_ids():
        rec = store.run_record(run_id)
        old_of[run_id] = _write_schema0(store.run_dir(run_id), rec, _legacy_config(rec["config"]))
        os.rename(store.run_dir(run_id), root / old_of[run_id])
    for path in (root / "_experiments").glob("*.json"):
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "runs": [old_of[r] for r in manifest["runs"]]}))
    return {old: new for new, old in old_of.items()}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A schema 0 store of two experiments: "a" (one old validation batch, both runs done) and "b" (four
    batches, batch-size dependent: one run done, one preempted half-way). Returns (root, experiment
    files, {old id: id under schema 1})."""
    tmp = tmp_path_factory.mktemp("legacy")
    a, b = _experiment(tmp, "a", [1e-3, 3e-3], 1), _experiment(tmp, "b", [1e-3, 3e-3], 4)
    root = tmp / "store"
    store, ids = _register(root, a)
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    store, ids = _register(root, b)
    assert Worker(store, ids, OPTIONS, stop=StopAfter(20)).run() == EXIT_REQUEUE
    assert [store.status(i)["state"] for i in ids] == ["done", "pending"] and store.inspect(ids[1]).checkpoints
    return root, {"a": a, "b": b}, _to_schema0(root)


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


# ---------------------------------------------------------------- before the migration


def test_run_and_status_on_a_schema0_store_point_to_migrate_and_write_nothing(tmp_path, legacy, capsys):
    """Regression: the old code re-registered every run of such a store under a new id and trained it again."""
    root = _copy(legacy[0], tmp_path / "store")
    before = _files(root)
    assert main(["sweep", "run", str(legacy[1]["a"]), "--store", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"run `scaling sweep migrate --store {root}`" in err and len(err.strip().splitlines()) == 1, err
    assert main(["sweep", "status", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"4 runs were registered by older code (identity schema 0, this code: {IDENTITY_SCHEMA}): run " \
           f"`scaling sweep migrate --store {root}`" in out and "4 runs" in out
    assert _files(root) == before


# ---------------------------------------------------------------- the migration


def test_migrate_rekeys_keeps_finished_runs_and_restarts_unfinished_ones(tmp_path, legacy, capsys):
    root = _copy(legacy[0], tmp_path / "store")
    exp_a, exp_b = (load_experiment(legacy[1][n]) for n in ("a", "b"))
    new_a, new_b = [r.id for r in expand(exp_a)], [r.id for r in expand(exp_b)]
    new_of = legacy[2]
    old_of = {v: k for k, v in new_of.items()}
    before = {old: _files(root / old) for old in new_of}
    assert main(["sweep", "migrate", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    for old, new in new_of.items():
        assert f"{old} -> {new}" in out
    assert "note, validation: 2 runs (1 finished" in out and "batch-size-dependent" in out
    assert "restarts from scratch" in out and "migrated 4 runs" in out

    store = Store(root)
    assert store.run_ids() == sorted(new_a + new_b)  # the ids today's expansion gives
    assert store.manifest("a")["runs"] == new_a and store.manifest("b")["runs"] == new_b
    assert not store.outdated() and not store.migrating()
    for run_id in new_a + new_b:
        rec = store.run_record(run_id)
        assert rec["schema"] == IDENTITY_SCHEMA and rec["id"] == run_id and rec["migrated"]["from_id"] == old_of[run_id]
    # a: one old validation batch is exactly today's set; finished files are kept byte for byte
    for run_id in new_a:
        after = _files(root / run_id)
        for name in ("metrics.jsonl", "summary.json", "status", "events.jsonl"):
            assert after[name] == before[old_of[run_id]][name]
        notes = store.run_record(run_id)["migrated"]["notes"]
        assert [n.split(":")[0] for n in notes] == ["norm logging"]
    # b: the finished run is data, marked; the unfinished one restarts (its partial files set aside)
    done, partial = new_b
    assert _files(root / done)["metrics.jsonl"] == before[old_of[done]]["metrics.jsonl"]
    config = json.loads((root / done / "config.json").read_text())
    assert config["_migration"]["notes"][0].startswith("validation: the old, batch-size-dependent set")
    assert config["run"]["eval_tokens"] == 4 * BT and "eval_batches" not in config["run"]
    assert store.status(partial)["state"] == "pending" and store.status(partial)["attempts"] == 0
    aside = root / partial / "quarantine" / f"migrate-schema-{IDENTITY_SCHEMA}"
    assert (aside / "metrics.jsonl").exists() and (aside / "ckpt").is_dir()
    assert not (root / partial / "metrics.jsonl").exists() and not store.inspect(partial).checkpoints

    # idempotent: a second pass changes nothing and says so
    snapshot = _files(root)
    assert main(["sweep", "migrate", "--store", str(root)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out and _files(root) == snapshot

    # `sweep run` registers the same runs: finished ones are not trained again, the reset one from step 0
    for exp, ids in ((exp_a, new_a), (exp_b, new_b)):
        assert store.register(exp, expand(exp)) == ids
    assert Worker(store, new_a + new_b, OPTIONS).run() == EXIT_DONE
    assert [len(_starts(store, r)) for r in new_a + [done]] == [1, 1, 1]
    assert [s["from_step"] for s in _starts(store, partial)] == [0, 0]  # the old start, then from scratch
    assert store.status(partial)["state"] == "done" and store.inspect(partial).finished()


def _rich_legacy(root: Path, new_of: dict) -> dict:
    """Add to a schema 0 store a duplicate (optim.ns_method='direct', the old default, which AdamW never
    read: the same run once upgraded) and a run whose config no longer loads (an unknown field)."""
    store = Store(root)
    a0, a1 = (old for old, new in sorted(new_of.items()) if store.run_record(old)["experiment"] == "a")
    extra = {}
    for src, kind in ((a0, "duplicate"), (a1, "invalid")):
        tmp = root / f"_tmp_{kind}"
        shutil.copytree(root / src, tmp)
        rec = json.loads((tmp / "run.json").read_text())
        legacy = copy.deepcopy(rec["config"])
        if kind == "duplicate":
            legacy["optim"]["ns_method"] = "direct"
        else:
            legacy["run"]["no_such_field"] = 1
        old_id = _write_schema0(tmp, rec, legacy)
        os.rename(tmp, root / old_id)
        extra[kind] = old_id
    manifest = json.loads((root / "_experiments" / "a.json").read_text())
    manifest["runs"] += [extra["duplicate"], extra["invalid"]]
    (root / "_experiments" / "a.json").write_text(json.dumps(manifest))
    return extra


def _state(root: Path) -> dict:
    """Every file of a store (temporary dot-files aside), status files without their timestamp."""
    out = {}
    for name, data in _files(root).items():
        if any(part.startswith(".") for part in Path(name).parts):
            continue
        if Path(name).name == "status":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "updated"}, sort_keys=True).encode()
        out[name] = data
    return out


def test_migrate_interrupted_at_every_step_finishes_on_rerun(tmp_path, legacy, monkeypatch):
    """A crash between any two filesystem steps (every os.replace: atomic writes and renames), then a rerun:
    the same store as an uninterrupted migration, no run lost or duplicated, and never usable in between."""
    pristine = tmp_path / "pristine"
    _copy(legacy[0], pristine)
    extra = _rich_legacy(pristine, legacy[2])
    real_replace = os.replace
    calls = {"n": 0, "fail_at": None}

    def replace(src, dst):
        if calls["n"] == calls["fail_at"]:
            raise OSError("injected crash")
        calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    reference = _copy(pristine, tmp_path / "reference")
    result = migrate(reference, log=lambda msg: None)
    total, expected = calls["n"], _state(reference)
    kinds = sorted(m["kind"] for m in result["moves"])
    assert kinds == ["duplicate", "invalid", "rekey", "rekey", "rekey", "rekey"]
    (kept_aside,) = (reference / "_superseded").iterdir()  # one of the two copies of the same run
    assert (kept_aside / "set_aside.json").exists()
    aside = json.loads((reference / "_unmigrated" / extra["invalid"] / "set_aside.json").read_text())
    assert "run.no_such_field" in aside["reason"]
    assert Store(reference).manifest("a")["runs"] == [r.id for r in expand(load_experiment(legacy[1]["a"]))]
    assert total > 10, total
    for k in range(total):
        root = _copy(pristine, tmp_path / f"crash{k}")
        calls.update(n=0, fail_at=k)
        with pytest.raises(OSError, match="injected crash"):
            migrate(root, log=lambda msg: None)
        calls.update(fail_at=None)
        with pytest.raises(ConfigError, match="scaling sweep migrate"):
            Store(root).require_current()  # `sweep run` refuses a half-migrated store
        migrate(root, log=lambda msg: None)
        assert _state(root) == expected, f"crash before os.replace call {k}"
        assert not (root / MIGRATION_JOURNAL).exists()
        shutil.rmtree(root)


def test_migrate_refuses_a_store_with_running_workers(tmp_path, legacy, capsys):
    root = _copy(legacy[0], tmp_path / "store")
    run_id = sorted(legacy[2])[0]
    lease = Lease.acquire(root / run_id, "busy-worker", ttl=60)
    try:
        before = {k: v for k, v in _files(root).items() if not k.endswith("/lease")}
        assert main(["sweep", "migrate", "--store", str(root)]) == 2
        err = capsys.readouterr().err
        assert "is in use" in err and f"run {run_id} by busy-worker" in err and len(err.strip().splitlines()) == 1
        assert {k: v for k, v in _files(root).items() if not k.endswith("/lease")} == before
    finally:
        lease.release()
    assert main(["sweep", "migrate", "--store", str(root)]) == 0  # once the worker is gone


def test_a_worker_stops_claiming_while_a_migration_is_under_way(tmp_path):
    """A worker takes a lease, then checks for the journal (the migration writes it, then checks leases)."""
    store, ids = _register(tmp_path / "store", _experiment(tmp_path, "exp", [1e-3], 2))
    (store.root / MIGRATION_JOURNAL).write_text("{}")
    log: list[str] = []
    assert Worker(store, ids, OPTIONS, log=log.append).run() == EXIT_REQUEUE
    assert not _starts(store, ids[0]) and not (store.run_dir(ids[0]) / "lease").exists()
    assert any("migration is under way" in m for m in log)


# ---------------------------------------------------------------- a data file that has gone


def test_missing_data_file_leaves_finished_runs_untouched_and_is_reported(tmp_path, capsys):
    data = tmp_path / "plays.txt"
    data.write_text("to be or not to be, that is the question; whether 'tis nobler in the mind " * 100)
    analysis = "ANALYSIS = {'recipe': 'lr_transfer', 'n_boot': 20}\n"
    base = {"data.source": "file", "data.path": str(data)}
    path = _experiment(tmp_path, "exp", [1e-3, 3e-3], 2, base=base, extra=analysis)
    store, ids = _register(tmp_path / "store", path)
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    _experiment(tmp_path, "exp", [1e-3, 3e-3, 1e-2], 2, base=base, extra=analysis)  # a new point, not trained yet
    data.rename(tmp_path / "plays-renamed.txt")
    finished = {r: _files(store.run_dir(r)) for r in ids}
    root = str(store.root)

    assert main(["sweep", "status", "--store", root]) == 0
    assert "done 2" in capsys.readouterr().out
    cache = str(shared_jax_cache())
    code = main(["sweep", "run", str(path), "--store", root, "--workers", "1", "--no-progress", "--max-attempts", "1",
                 "--jax-cache", cache])
    out = capsys.readouterr().out
    assert code == 1  # one run cannot start: left pending, no attempt spent
    new = [r for r in store.manifest("exp")["runs"] if r not in ids]
    assert len(new) == 1 and store.status(new[0])["state"] == "pending" and store.status(new[0])["blocked"]
    out = " ".join(out.split())  # the status table may wrap long lines
    assert f"cannot start {new[0]}" in out and f"data.path={str(data)!r}: no such file" in out, out
    assert main(["analyze", str(path), "--store", root, "--out", str(tmp_path / "results")]) == 0
    capsys.readouterr()
    for run_id in ids:
        assert _files(store.run_dir(run_id)) == finished[run_id], run_id


# ---------------------------------------------------------------- adding a config field


PATCHES = {  # a new field with its default in two sections, as a later change of scaling/config.py would add
    "    diverge_factor: float = 2.0  # loss > factor * initial loss -> diverged\n":
        "    new_knob: int = 0  # a field added later, with its default\n",
    "    scan_layers: bool = False  # lax.scan over blocks (fast compiles for deep models; slower on CPU)\n":
        "    new_flag: bool = False  # a field added later, with its default\n",
}

PROBE = r"""
import contextlib, io, json, sys
import scaling
from scaling.config import Config
from scaling.identity import check_same_run
from scaling_cli import main
from sweeps.experiment import expand, load_experiment
from sweeps.store import Store
assert scaling.__file__.startswith(sys.argv[1]), scaling.__file__
assert Config().run.new_knob == 0 and Config().model.new_flag is False
store, path = Store(sys.argv[2]), sys.argv[3]
runs = expand(load_experiment(path))
for run in runs:
    check_same_run(store.run_dir(run.id) / "config.json", run.config)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["sweep", "plan", path, "--store", sys.argv[2]]) == 0
print(json.dumps({"quickstart": [r.id for r in expand(load_experiment("quickstart"))],
                  "ids": [r.id for r in runs], "finished": [store.inspect(r.id).finished() for r in runs],
                  "plan": out.getvalue()}))
"""


def test_adding_a_config_field_keeps_every_run_id_and_stored_run(tmp_path, capsys):
    """The invariant of the issue, on a copy of the packages whose scaling/config.py gained two fields with
    defaults: the quickstart's run ids (expanded, not trained) and a stored run (its id, plan state,
    finished check and config.json check) are unchanged. Regression: the ids hashed every field."""
    path = _experiment(tmp_path, "exp", [1e-3, 3e-3], 2)
    store, ids = _register(tmp_path / "store", path)
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    assert main(["sweep", "plan", str(path), "--store", str(store.root)]) == 0
    plan_before = capsys.readouterr().out
    quickstart = [r.id for r in expand(load_experiment("quickstart"))]

    src = tmp_path / "src"
    for package in ("scaling", "sweeps", "analysis", "scaling_cli"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    config = src / "scaling" / "config.py"
    text = config.read_text()
    for anchor, field in PATCHES.items():
        assert text.count(anchor) == 1, anchor
        text = text.replace(anchor, anchor + field)
    config.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(src), str(store.root), str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert after["quickstart"] == quickstart and len(set(quickstart)) == 56
    assert after["ids"] == ids and after["finished"] == [True, True]
    assert after["plan"] == plan_before and plan_before.count(" done") == 2

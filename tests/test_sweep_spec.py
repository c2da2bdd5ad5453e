"""The sweep language and run ids: deterministic expansion, stable identity, spec errors named and harmless."""

import json
from pathlib import Path

import pytest

from scaling_cli import main
from scaling.config import ConfigError
from sweeps import spec as sw
from sweeps.experiment import Experiment, expand, load_experiment
from scaling.identity import canonical_json, digest, identity
from sweeps.run_id import format_value
from sweeps.store import Store

BASE = {"model.kind": "mlp", "model.width": 32, "model.depth": 1, "model.context": 16, "model.window": 4,
        "data.source": "synthetic", "run.steps": 4}


def _experiment(sweep, base=BASE, name="t"):
    return Experiment(name=name, sweep=sweep, base=dict(base))


def _write(tmp_path: Path, body: str, name: str = "exp.py") -> Path:
    path = tmp_path / name
    path.write_text("from sweeps.spec import *\n" + f"BASE = {BASE!r}\n" + body)
    return path


def test_product_zip_chain_subsample_order():
    a, b = sw.axis("optim.lr", [1, 2]), sw.axis("run.seed", [0, 1, 2])
    assert [tuple(p.values()) for p in sw.product(a, b)] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    z = sw.zip(sw.axis("param.kind", ["sp", "mup"]), sw.axis("param.base_width", [0, 32]))
    assert list(z) == [{"param.kind": "sp", "param.base_width": 0}, {"param.kind": "mup", "param.base_width": 32}]
    assert len(sw.chain(a, b)) == 5 and sw.chain(a, b).axes == ("optim.lr", "run.seed")
    big = sw.product(a, b)
    sub = sw.subsample(big, 3, seed=7)
    assert len(sub) == 3 and sub.points == sw.subsample(big, 3, seed=7).points  # seeded
    order = [big.points.index(p) for p in sub.points]
    assert order == sorted(order)  # original order kept
    assert sw.subsample(big, 10) is big


def test_derived_values_and_lr_grid():
    assert sw.log2_grid(1e-3, -0.5, 0.5) == [0.000707107, 0.001, 0.00141421]
    assert sw.log2_grid(4e-3, -2, 2, step=1) == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    sweep = sw.product(sw.axis("tokens", [1024, 4096]), sw.axis("run.batch_size", [2, 4]),
                       sw.derived("run.steps", sw.steps_for_tokens()))
    runs = expand(_experiment(sweep))
    steps = {(r.coords["tokens"], r.coords["run.batch_size"]): r.config.run.steps for r in runs}
    assert steps == {(1024, 2): 32, (1024, 4): 16, (4096, 2): 128, (4096, 4): 64}  # context 16
    assert "tokens" in runs[0].id and "steps" not in runs[0].id  # free variables are coordinates


def test_run_id_is_the_hash_of_the_identity():
    (run,) = expand(_experiment(sw.axis("optim.lr", [0.001])))
    assert run.digest == digest(run.config)
    assert run.id == f"lr1e-3-{run.digest[:8]}"
    # the same config written differently (defaults spelled out, 1e-3 vs 0.001) is the same run
    (same,) = expand(_experiment(sw.axis("optim.lr", [1e-3]), base={**BASE, "optim.b1": 0.9}))
    assert same.digest == run.digest
    ident = json.loads(canonical_json(identity(run.config)))
    assert ident["config"]["optim.lr"] == 0.001 and "optim.b1" not in ident["config"]  # defaults are left out
    assert [format_value(v) for v in (0.003, 0.25, 64, True, 2e6)] == ["3e-3", "0.25", "64", "1", "2e6"]


def test_reexpansion_and_axis_reordering_keep_ids():
    lr, width = sw.axis("optim.lr", [1e-3, 3e-3]), sw.axis("model.width", [16, 32])
    ids = [r.id for r in expand(_experiment(sw.product(lr, width)))]
    assert ids == [r.id for r in expand(_experiment(sw.product(lr, width)))]
    assert sorted(ids) == sorted(r.id for r in expand(_experiment(sw.product(width, lr))))
    assert len(set(ids)) == 4


def test_adding_axis_points_keeps_old_ids(tmp_path):
    old = expand(_experiment(sw.product(sw.axis("optim.lr", [1e-3, 3e-3]), sw.axis("run.seed", [0]))))
    new = expand(_experiment(sw.product(sw.axis("optim.lr", [1e-3, 3e-3, 1e-2]), sw.axis("run.seed", [0]))))
    assert {r.id for r in old} < {r.id for r in new}
    store = Store(tmp_path / "store")
    exp = _experiment(sw.axis("optim.lr", [1e-3]))
    store.register(exp, old)
    (store.run_dir(old[0].id) / "status").write_text('{"state": "done"}')
    assert store.register(exp, new)[:2] == [r.id for r in old]
    assert store.status(old[0].id)["state"] == "done"  # registration never resets a run
    assert store.status(new[2].id)["state"] == "pending"


@pytest.mark.parametrize("body, key", [
    ('SWEEP = product(axis("optim.lrr", [1e-3]))\n', "optim.lrr"),
    ('SWEEP = product(axis("optim.lr", []))\n', "optim.lr"),
    ('SWEEP = zip(axis("optim.lr", [1e-3, 2e-3]), axis("run.seed", [0, 1, 2]))\n', "run.seed"),
    ('SWEEP = axis("model.width", [0])\n', "model.width"),
    ('SWEEP = product(axis("optim.lr", [1e-3]), axis("optim.lr", [2e-3]))\n', "optim.lr"),
    ('SWEEP = axis("optim.lr", [1e-3])\nBATCH = "sometimes"\n', "BATCH"),
])
def test_spec_errors_exit_2_naming_the_key_and_write_nothing(tmp_path, capsys, body, key):
    path = _write(tmp_path, body)
    store = tmp_path / "store"
    assert main(["sweep", "run", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert key in err and len(err.splitlines()) == 1, err
    assert not store.exists()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        expand(load_experiment(path))


def test_experiment_files_are_imported_by_name_or_path(tmp_path):
    exp = load_experiment("quickstart")
    assert exp.analysis["recipe"] == "lr_transfer" and len(expand(exp)) == len(exp.sweep)
    with pytest.raises(ConfigError, match="neither"):
        load_experiment("no_such_experiment")
    broken = _write(tmp_path, "SWEEP = axis('optim.lr', [1e-3])\n1 / 0\n", "broken.py")
    with pytest.raises(ConfigError, match="broken.py.*ZeroDivisionError"):
        load_experiment(broken)

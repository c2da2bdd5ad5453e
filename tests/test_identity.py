"""Run identity (scaling.identity): only non-default fields count, the schema rule is enforced against a
committed snapshot of the defaults, config.json checks survive added fields, schema 0 configs upgrade."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from scaling import data as data_lib
from scaling.config import OPTIMIZERS, Config, ConfigError, ModelConfig, from_dict, load_config, optim_config, to_dict
from scaling.identity import (IDENTITY_SCHEMA, MIGRATIONS, NOTE_VALIDATION, check_same_run, defaults, digest,
                              flatten, identity, upgrade)

DATA = Path(__file__).parent / "data"
SCHEMA0_CONFIG = json.loads((DATA / "identity_schema0_config_51756ed.json").read_text())  # Config() of 51756ed


# ---------------------------------------------------------------- the identity


def test_identity_holds_only_the_fields_that_differ_from_their_defaults():
    assert identity(Config()) == {"schema": IDENTITY_SCHEMA, "config": {}}
    cfg = from_dict(Config, {"optim": {"lr": 1e-3}, "model": {"width": 64}})
    assert identity(cfg)["config"] == {"optim.lr": 1e-3, "model.width": 64}
    spelled_out = from_dict(Config, {"optim": {"lr": 0.001, "b1": 0.9}, "model": {"width": 64.0}})
    assert digest(spelled_out) == digest(cfg) == digest(to_dict(cfg))  # a resolved dict is the same run
    # an int given to a float field in Python code is the number the config loader makes of it
    assert digest(Config(optim=optim_config(lr=1))) == digest(from_dict(Config, {"optim": {"lr": "1"}}))
    assert digest(cfg) != digest(Config())


def test_a_non_finite_value_is_named():
    with pytest.raises(ConfigError, match=r"model\.rope_theta=nan must be a finite number"):
        digest(Config(model=ModelConfig(rope_theta=float("nan"))))


# ---------------------------------------------------------------- the schema rule


def _schema_violations(snapshot: dict, current: dict) -> list[str]:
    """What breaks the identity of stored runs: a default that changed, a field that disappeared."""
    out = []
    for key, value in snapshot.items():
        if key not in current:
            out.append(f"{key} was removed")
        elif current[key] != value:
            out.append(f"the default of {key} changed from {value!r} to {current[key]!r}")
    return out


def test_defaults_match_the_snapshot_of_this_identity_schema():
    path = DATA / f"identity_defaults_v{IDENTITY_SCHEMA}.json"
    assert path.is_file(), f"IDENTITY_SCHEMA={IDENTITY_SCHEMA} needs its snapshot {path} (flattened defaults)"
    snapshot = json.loads(path.read_text())
    violations = _schema_violations(snapshot, defaults())
    for name in OPTIMIZERS:  # each optimizer's class: its optim defaults are the snapshot's, name aside
        own = defaults(load_config(overrides=[f"optim.name={name}"]))
        violations += [f"{key} of optim.name={name!r}: {v}" for key, v in
                       ((k, _schema_violations({k: snapshot[k]}, own)) for k in own if k in snapshot) if v]
    assert not violations, (
        "; ".join(violations) + f": stored runs would change identity. Either restore it, or bump "
        f"scaling.identity.IDENTITY_SCHEMA to {IDENTITY_SCHEMA + 1}, add tests/data/identity_defaults_v"
        f"{IDENTITY_SCHEMA + 1}.json and a step MIGRATIONS[{IDENTITY_SCHEMA}] (`scaling sweep migrate`)")
    assert sorted(MIGRATIONS) == list(range(IDENTITY_SCHEMA)), "every older schema needs its migration step"


def test_the_schema_rule_allows_new_fields_and_refuses_changed_or_removed_ones():
    snapshot = {"optim.lr": 3e-3, "run.steps": 200}
    assert _schema_violations(snapshot, {**snapshot, "run.new_knob": 0}) == []
    assert _schema_violations(snapshot, {**snapshot, "optim.lr": 1e-3}) == [
        "the default of optim.lr changed from 0.003 to 0.001"]
    assert _schema_violations(snapshot, {"optim.lr": 3e-3}) == ["run.steps was removed"]


def test_the_snapshot_is_todays_defaults():
    """The snapshot is what the rule protects; defaults(cfg) is what identity() compares against: the
    default config's fields outside optim and optim.name, the selected optimizer class's other optim fields."""
    union = {}
    for name in OPTIMIZERS:
        cfg = load_config(overrides=[f"optim.name={name}"])
        flat = {k: v for k, v in flatten(to_dict(cfg)).items() if k != "optim.name"}
        assert defaults(cfg) == {**flat, "optim.name": "adamw"}
        union.update(flat)
    assert defaults() == {**union, "optim.name": "adamw"}
    assert identity(load_config(overrides=["optim.name=muon"]))["config"] == {"optim.name": "muon"}


# ---------------------------------------------------------------- config.json of a run directory


def _write_config_json(path: Path, body: dict) -> Path:
    path.write_text(json.dumps({**body, "_meta": {"git_sha": "x"}}))
    return path


def test_config_json_without_a_newer_field_is_the_same_run(tmp_path):
    """Regression: the whole-dict comparison called a run directory "a different run" as soon as the code
    gained a field (here: one per section removed from the stored config, as older code wrote it)."""
    cfg = from_dict(Config, {"optim": {"lr": 1e-3}})
    body = to_dict(cfg)
    for section, field in (("optim", "wd_coupling"), ("data", "val_path"), ("run", "eval_seed")):
        del body[section][field]
    check_same_run(_write_config_json(tmp_path / "config.json", body), cfg)  # no error
    check_same_run(tmp_path / "config.json", to_dict(cfg))  # the resolved dict, as scaling.train passes it


def test_the_device_layout_is_not_part_of_the_run(tmp_path):
    """run.mesh and run.sharding_rules say where a run computes, not what: a run directory trained on
    one mesh resumes on another (a regression: check_same_run refused it as another run)."""
    one = from_dict(Config, {"optim": {"lr": 1e-3}, "run": {"batch_size": 8}})
    sharded = from_dict(Config, {"optim": {"lr": 1e-3}, "run": {"batch_size": 8, "mesh": {"data": 2, "fsdp": 2},
                                                               "sharding_rules": {"vocab": []}}})
    assert identity(sharded) == identity(one) and digest(sharded) == digest(one)
    check_same_run(_write_config_json(tmp_path / "config.json", to_dict(one)), sharded)  # no error
    assert digest(from_dict(Config, {"optim": {"lr": 1e-3}, "run": {"batch_size": 16}})) != digest(one)


def test_config_json_of_another_run_names_the_differing_key(tmp_path):
    path = _write_config_json(tmp_path / "config.json", to_dict(from_dict(Config, {"optim": {"lr": 1e-3}})))
    with pytest.raises(ConfigError, match=r"holds a different run \(optim\.lr=0\.001 in its config\.json, 0\.1 here\)"):
        check_same_run(path, from_dict(Config, {"optim": {"lr": 0.1}}))


def test_config_json_with_a_field_this_code_does_not_know_is_a_clear_error(tmp_path):
    path = _write_config_json(tmp_path / "config.json", SCHEMA0_CONFIG)  # holds run.eval_batches
    with pytest.raises(ConfigError, match=r"run\.eval_batches.*scaling sweep migrate"):
        check_same_run(path, Config())
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="does not hold a config object"):
        check_same_run(tmp_path / "bad.json", Config())


# ---------------------------------------------------------------- schema 0 -> 1


def _schema0(**sections) -> dict:
    cfg = copy.deepcopy(SCHEMA0_CONFIG)
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


def test_schema0_config_of_the_previous_code_upgrades_and_loads():
    with pytest.raises(ConfigError, match="eval_batches"):
        from_dict(Config, SCHEMA0_CONFIG)
    config, notes = upgrade(SCHEMA0_CONFIG, 0)
    cfg = from_dict(Config, config)
    # 4 batches of 32 x 128 tokens drawn with data seed 0: as many tokens, but not the same sequences
    assert (cfg.run.eval_tokens, cfg.run.eval_seed) == (4 * 32 * 128, 0)
    assert cfg.model.residual_out_init  # the old code always scaled the transformer's residual outputs
    assert [n.split(":")[0] for n in notes] == [NOTE_VALIDATION, "norm logging"]
    assert "batch-size-dependent" in notes[0]


def test_schema0_mappings_per_case():
    one_batch, notes = upgrade(_schema0(run={"eval_batches": 1, "batch_size": 8, "data_seed": 3},
                                        model={"kind": "mlp", "context": 32, "window": 4}), 0)
    assert one_batch["run"]["eval_tokens"] == 8 * 32 and one_batch["run"]["eval_seed"] == 3
    assert not one_batch["model"]["residual_out_init"]  # no residual stream in the MLP LM
    assert not any(n.startswith(NOTE_VALIDATION) for n in notes)  # exactly the old set (next test)
    # optim.ns_method='direct' was the default once; AdamW never read it (now it must stay at its default)
    adamw, _ = upgrade(_schema0(optim={"ns_method": "direct"}), 0)
    assert "ns_method" not in adamw["optim"] and from_dict(Config, adamw).optim == optim_config("adamw")
    muon, _ = upgrade(_schema0(optim={"name": "muon", "ns_method": "direct"}), 0)
    assert from_dict(Config, muon).optim.ns_method == "direct"  # read by Muon: kept
    scion, notes = upgrade(_schema0(optim={"name": "scion", "norms": {"embedding": "sign", "hidden": "spectral",
                                                                       "output": "sign", "vector": "bias_rms"}}), 0)
    assert any(n.startswith("scion:") for n in notes) and from_dict(Config, scion).optim.name == "scion"
    _, notes = upgrade(_schema0(optim={"name": "manifold_muon"}), 0)
    assert any(n.startswith("manifold muon:") for n in notes)
    # written by code with the batch-size-independent set but before schemas: nothing to map
    current = to_dict(from_dict(Config, {"optim": {"lr": 1e-3}}))
    assert upgrade(current, 0) == (current, [])
    with pytest.raises(ConfigError, match="newer"):
        upgrade(current, IDENTITY_SCHEMA + 1)


def test_one_old_validation_batch_is_exactly_todays_set():
    """The faithful case of the mapping: run.eval_batches=1 drew batch 0 of run.batch_size windows from
    (run.data_seed, VAL, 0), as the code before schema 1 did; today's set of eval_tokens = batch_size x
    context drawn with eval_seed = data_seed is the same windows."""
    from scaling.train import validation_batches

    old = _schema0(run={"eval_batches": 1, "batch_size": 8, "data_seed": 5},
                   model={"kind": "mlp", "context": 32, "window": 4}, data={"source": "synthetic"})
    cfg = from_dict(Config, upgrade(old, 0)[0])
    dataset = data_lib.load_dataset(cfg.data, cfg.model.vocab_size)
    before = np.stack([data_lib.batch(dataset.val, 5, i, 8, 33, data_lib.VAL) for i in range(1)])  # old code
    chunks, rest = validation_batches(dataset, cfg)
    now = np.concatenate([chunks.reshape(-1, 33), rest])
    np.testing.assert_array_equal(now, before.reshape(-1, 33))


def test_train_resumes_a_run_directory_written_before_a_field_existed(tmp_path):
    """Regression: scaling.train compared whole config dicts, so the directory of a finished run whose
    config.json predates a field (here one per section) was "a different run" and refused."""
    from scaling.train import train
    from tests.conftest import tiny_config

    cfg = tiny_config()
    summary = train(cfg, tmp_path)
    path = tmp_path / "config.json"
    stored = json.loads(path.read_text())
    del stored["optim"]["wd_coupling"], stored["data"]["val_path"], stored["run"]["eval_seed"]
    path.write_text(json.dumps(stored))
    assert train(cfg, tmp_path) == summary
    with pytest.raises(ConfigError, match=r"different run \(optim\.lr"):
        train(tiny_config("optim.lr=0.1"), tmp_path)


# Digests computed at commit bb3211e, before the optim section became one class per optimizer: the split
# (and any later reorganisation of the config classes) must leave every stored run's identity as it was.
DIGESTS_BEFORE_THE_SPLIT = {
    "optim.name=adamw optim.b2=0.99": "7dbd2a9da0ed592faf00531912efb9a2d9368cae01364099210ff213cf91b6c7",
    "optim.name=sgd optim.b1=0.5": "9d94afc1219fff5e18c56f2c3da84f839535f38c3d3c1a1db70a9608f121e034",
    "optim.name=lion optim.embedding_fallback=lazy optim.b1=0.95":
        "3e13da8b47d03f70b6ee3ac4589c8209cb6725e012efcce48fca19c385bea1fa",
    "optim.name=tiger optim.b1=0.965": "cc14a4fcb274eff1b7e1ae17b2bfed96b0f11f198b3a22e9b11f15881ff5e6ab",
    "optim.name=muon optim.momentum=0.9 optim.ns_coeffs=polar_express optim.fallback_lr=0.01":
        "a5fe18b1073dc035b8c52986bd97bf60e11e62ca98444ab9e2ca3f556f40a1c9",
    "optim.name=scion optim.alpha=1.0 optim.norms.output=rownorm optim.radius.hidden=2.0":
        "ece1cfb6e989cdb8b9a68efd8fb43c866938cae31c0dbe741cb1172f4ff3f191",
    "optim.name=manifold_muon optim.dual_steps=10": "94b5fb2f3af5b524c0cdb645dec7f5588f3119bca2a94caf767b570cef989b47",
    "param.kind=scion optim.norms.hidden=colnorm": "0ab519a6619f4197d19f4069792976b13bd009a1b06cce011236108cf720bf75",
}


@pytest.mark.parametrize("overrides", sorted(DIGESTS_BEFORE_THE_SPLIT))
def test_one_class_per_optimizer_keeps_every_run_id(overrides):
    cfg = load_config(overrides=overrides.split())
    assert digest(cfg) == DIGESTS_BEFORE_THE_SPLIT[overrides]
    assert digest(to_dict(cfg)) == digest(cfg)  # and the config.json it writes reads back as the same run

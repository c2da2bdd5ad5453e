"""Config loading: overrides, strict fields, and one clear message naming the field."""

import json

import pytest

from scaling.config import Config, ConfigError, from_dict, load_config, to_dict


def test_overrides_coerce_types_and_nest():
    cfg = load_config(overrides=["optim.lr=1e-3", "model.width=64", "param.lr_mult.hidden=0.125",
                                 "model.tie_embeddings=true", "optim.decay_roles=hidden,output"])
    assert cfg.optim.lr == 1e-3 and cfg.model.width == 64 and cfg.param.lr_mult.hidden == 0.125
    assert cfg.model.tie_embeddings is True and cfg.optim.decay_roles == ("hidden", "output")


def test_round_trip_through_json():
    cfg = load_config(overrides=["model.kind=mlp", "optim.name=adamw", "run.steps=7"])
    assert from_dict(Config, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  width: 48\n  n_heads: 3\nrun:\n  steps: 5\n")
    cfg = load_config(p)
    assert cfg.model.width == 48 and cfg.run.steps == 5


@pytest.mark.parametrize("override, field", [
    (["model.wdith=64"], "model.wdith"),
    (["model.width=0"], "model.width"),
    (["model.width=-8"], "model.width"),
    (["model.width=100", "model.n_heads=3"], "model.n_heads"),
    (["model.width=abc"], "model.width"),
    (["optim.name=adamx"], "optim.name"),
    (["optim.lr=-1"], "optim.lr"),
    (["optim.b1=1.0"], "optim.b1"),
    (["optim.decay_roles=hidden,bias"], "optim.decay_roles"),
    (["param.kind=ntk"], "param.kind"),
    (["param.lr_mult.bias=2"], "param.lr_mult.bias"),
    (["data.source=file"], "data.path"),  # unset; whether the file exists is the loader's (test_data.py)
    (["run.schedule=linear"], "run.schedule"),
    (["run.steps=1.5"], "run.steps"),
])
def test_invalid_input_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("[", r"\[")):
        load_config(overrides=override)


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="missing.json"):
        load_config(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(broken)

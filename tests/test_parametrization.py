"""Per-role learning-rate rules and schedules, read from specs."""

import math

import jax
import numpy as np
import pytest

from scaling import models, parametrization
from scaling.config import ModelConfig, optim_config, ParamConfig, PerRole, RunConfig
from scaling.schedules import make_schedule
from scaling.specs import spec_leaves_with_paths

WIDE = ModelConfig(width=128, depth=2, n_heads=4, context=16, mlp_ratio=2)


def _mults_by_role(param, optim):
    specs = models.param_specs(WIDE, param)
    mults = parametrization.lr_multipliers(specs, param, optim)
    out = {}
    for (path, spec), m in zip(spec_leaves_with_paths(specs), jax.tree_util.tree_leaves(mults)):
        out.setdefault(spec.role, set()).add(round(m, 9))
    return out


def test_mup_adam_rule_divides_hidden_and_output_by_width_ratio():
    mup = ParamConfig(kind="mup", base_width=32)
    got = _mults_by_role(mup, optim_config(name="adamw"))
    m = 128 / 32
    assert got["embedding"] == {1.0} and got["vector"] == {1.0}
    assert got["output"] == {round(1 / m, 9)}
    # MLP down-projection: fan_in = d_ff, and d_ff scales with width by the same ratio
    assert got["hidden"] == {round(1 / m, 9)}


def test_orthogonalised_hidden_updates_keep_multiplier_one():
    mup = ParamConfig(kind="mup", base_width=32)
    assert _mults_by_role(mup, optim_config(name="muon", shape_scale="spectral"))["hidden"] == {1.0}
    moon = _mults_by_role(mup, optim_config(name="muon", shape_scale="moonlight"))["hidden"]
    assert moon == {round(1 / math.sqrt(4), 9)}


def test_free_multipliers_multiply_the_rule():
    p = ParamConfig(kind="sp", lr_mult=PerRole(embedding=1.0, hidden=0.125, output=1.0, vector=2.0))
    got = _mults_by_role(p, optim_config(name="adamw"))
    assert got == {"embedding": {1.0}, "hidden": {0.125}, "output": {1.0}, "vector": {2.0}}


def test_mup_attention_scale_is_inverse_head_dim_beyond_base():
    mup = ParamConfig(kind="mup", base_width=32)
    base_dh, dh = 32 // 4, 128 // 4
    assert parametrization.forward_multipliers(WIDE, mup).attn == pytest.approx(math.sqrt(base_dh) / dh)
    assert parametrization.forward_multipliers(WIDE, ParamConfig()).attn == pytest.approx(1 / math.sqrt(dh))


@pytest.mark.parametrize("kind, check", [
    ("constant", lambda f: np.allclose(f, 1.0)),
    ("wsd", lambda f: np.allclose(f[:80], 1.0) and f[-1] == 0.0 and np.all(np.diff(f[79:]) < 0)),
    ("cosine", lambda f: f[0] == pytest.approx(1.0) and f[-1] < 1e-3 and np.all(np.diff(f) <= 1e-7)),
])
def test_schedules(kind, check):
    sched = make_schedule(RunConfig(steps=100, schedule=kind, decay_frac=0.2))
    f = np.array([float(sched(s)) for s in range(100)])
    assert check(f), f


def test_warmup_rises_linearly_then_holds():
    sched = make_schedule(RunConfig(steps=100, schedule="warmup", warmup_steps=10))
    f = np.array([float(sched(s)) for s in range(100)])
    np.testing.assert_allclose(f[:10], np.arange(1, 11) / 10, rtol=1e-6)
    assert np.allclose(f[10:], 1.0)

"""Lion and Tiger: reference trajectories (notes section 7) and the embedding remedies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling.config import ROLES, optim_config
from scaling.optim import build_optimizer
from scaling.specs import ParamSpec

SCALAR = {"theta": ParamSpec((1,), "vector", 1, 1, ("one",))}
GRADS = [1.0, -2.0, 0.5, 0.5]


def trajectory(cfg):
    tx = build_optimizer(cfg, SCALAR, {"theta": 1.0}, lambda t: 1.0)
    params, state, out = {"theta": jnp.ones(1)}, None, []
    state = tx.init(params)
    for g in GRADS:
        upd, state = tx.update({"theta": jnp.array([g])}, state, params)
        params = optax.apply_updates(params, upd)
        out.append(float(params["theta"][0]))
    return out


@pytest.mark.parametrize("wd,want", [(0.0, [0.9, 1.0, 0.9, 0.8]), (0.5, [0.85, 0.9075, 0.762125, 0.624019])])
def test_lion_trajectory(wd, want):
    cfg = optim_config(name="lion", lr=0.1, b1=0.9, b2=0.99, weight_decay=wd, decay_roles=ROLES)
    np.testing.assert_allclose(trajectory(cfg), want, rtol=1e-6)


def test_tiger_core_uses_b1_as_its_single_beta():
    cfg = optim_config(name="tiger", lr=0.1, b1=0.965, b2=0.5)  # b2 must not matter for Tiger's sign part
    np.testing.assert_allclose(trajectory(cfg), [0.9, 1.0, 1.1, 1.0], rtol=1e-6)
    # Lion with b2 != b1 goes elsewhere on the same gradients (third step 0.9, not 1.1)
    assert trajectory(optim_config(name="lion", lr=0.1, b1=0.965, b2=0.99))[2] == pytest.approx(0.9)


V, D = 6, 4
EMB = {"embed": ParamSpec((V, D), "embedding", V, D, ("vocab", "embed")),
       "gain": ParamSpec((D,), "vector", 1, D, ("embed",))}


def absent_row_movement(fallback, steps=12, wd=0.0):
    """Token 0 is seen once, then never again; tokens 1.. every step. Returns |update| of token 0's row
    and of token 1's row at the last step (lr = 0.01)."""
    cfg = optim_config(name="lion", lr=0.01, weight_decay=wd, embedding_fallback=fallback)
    tx = build_optimizer(cfg, EMB, {"embed": 1.0, "gain": 1.0}, lambda t: 1.0)
    rng = np.random.default_rng(0)
    params = {"embed": jnp.asarray(rng.standard_normal((V, D)), jnp.float32), "gain": jnp.ones(D)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(steps):
        g = rng.standard_normal((V, D)).astype(np.float32)
        if t > 0:
            g[0] = 0.0
        upd, state = step({"embed": jnp.asarray(g), "gain": jnp.ones(D)}, state, params)
        params = optax.apply_updates(params, upd)
    return np.abs(np.asarray(upd["embed"][0])).max(), np.abs(np.asarray(upd["embed"][1])).min()


def test_embedding_remedies_for_absent_tokens():
    # none: a sign update keeps moving the absent row by exactly lr per coordinate (the anomaly)
    absent, present = absent_row_movement("none")
    assert absent == pytest.approx(0.01) and present == pytest.approx(0.01)
    # lazy: the absent row does not move at all, decay included; present rows still take sign steps
    absent, present = absent_row_movement("lazy", wd=0.1)
    assert absent == 0.0 and present > 0.5 * 0.01
    # adamw (default): AdamW's step shrinks as the momentum of the absent row decays
    absent, _ = absent_row_movement("adamw")
    assert 0 < absent < 0.5 * 0.01

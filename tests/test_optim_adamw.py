"""AdamW against optax.adamw, and the lr / weight-decay conventions every optimizer shares (common.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling.config import optim_config
from scaling.optim import REGISTRY, build_optimizer
from scaling.testing import toy_grads, toy_params, toy_specs
from scaling.specs import tree_map_specs

SPECS = toy_specs(d=8, layers=2, vocab=16, d_ff=16)
PARAMS = toy_params(SPECS, seed=0)
ONES = tree_map_specs(lambda s: 1.0, SPECS)
SCHEDULE = lambda t: jnp.minimum(1.0, (t + 1) / 4.0)  # noqa: E731  (warmup multiplier)


def run(tx, steps=12):
    @jax.jit
    def go(grads):
        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (PARAMS, tx.init(PARAMS)), grads)[0][0]

    return go(toy_grads(PARAMS, seed=5, steps=steps))


def test_adamw_equals_optax_adamw_with_unit_multipliers_and_role_mask():
    cfg = optim_config(name="adamw", lr=1e-2, b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.3,
                      decay_roles=("hidden", "output"))
    ours = run(build_optimizer(cfg, SPECS, ONES, SCHEDULE))
    mask = tree_map_specs(lambda s: s.role in ("hidden", "output"), SPECS)
    ref = run(optax.adamw(lambda t: cfg.lr * SCHEDULE(t), b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.3, mask=mask))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), ours, ref)
    # the mask matters: decaying every role gives different embeddings
    everything = run(optax.adamw(lambda t: cfg.lr * SCHEDULE(t), b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.3))
    assert float(jnp.max(jnp.abs(everything["embed"] - ours["embed"]))) > 1e-4


def test_sgd_equals_optax_sgd_with_momentum():
    cfg = optim_config(name="sgd", lr=0.05, b1=0.9)
    ours = run(build_optimizer(cfg, SPECS, ONES, SCHEDULE))
    ref = run(optax.sgd(lambda t: cfg.lr * SCHEDULE(t), momentum=0.9))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), ours, ref)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "tiger", "muon", "scion", "manifold_muon"])
def test_decay_uses_the_base_lr_not_the_multiplied_one(name):
    """With a zero gradient every direction is 0 (Adam, sign(0), NS(0), a zero LMO), so one step is pure decay:
    -base_lr * schedule * wd * W on decayed roles whatever the leaf's lr multiplier (the muP correction),
    and exactly 0 on roles left out of decay_roles. Manifold Muon's hidden matrices are never decayed."""
    fallback = {"fallback_lr": 0.1} if "fallback_lr" in REGISTRY[name].config.fields() else {}
    cfg = optim_config(name=name, lr=0.1, weight_decay=0.5, decay_roles=("embedding", "hidden"), **fallback)
    mults = tree_map_specs(lambda s: {"embedding": 0.25, "hidden": 4.0}.get(s.role, 2.0), SPECS)
    tx = build_optimizer(cfg, SPECS, mults, lambda t: 0.5)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    upd, _ = jax.jit(tx.update)(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(upd["embed"], -0.1 * 0.5 * 0.5 * PARAMS["embed"], rtol=1e-5)
    np.testing.assert_array_equal(upd["unembed"], 0.0)
    np.testing.assert_array_equal(upd["final_norm"], 0.0)
    if name == "manifold_muon":
        return
    np.testing.assert_allclose(upd["blocks"]["w_in"], -0.1 * 0.5 * 0.5 * PARAMS["blocks"]["w_in"], rtol=1e-5)


def test_lr_multipliers_scale_the_step_and_schedules_multiply_them():
    cfg = optim_config(name="adamw", lr=0.1)
    mults = tree_map_specs(lambda s: 0.25 if s.role == "hidden" else 1.0, SPECS)
    tx = build_optimizer(cfg, SPECS, mults, lambda t: 0.5)
    g = toy_grads(PARAMS, seed=6)
    upd, _ = jax.jit(tx.update)(g, tx.init(PARAMS), PARAMS)
    # Adam's first step is lr * sign(g): here 0.1 * 0.5 * mult
    np.testing.assert_allclose(upd["blocks"]["wq"], -0.1 * 0.5 * 0.25 * np.sign(g["blocks"]["wq"]), rtol=1e-4)
    np.testing.assert_allclose(upd["embed"], -0.1 * 0.5 * np.sign(g["embed"]), rtol=1e-4)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "muon", "scion"])
@pytest.mark.parametrize("coupling", ["base", "leaf"])
def test_weight_decay_coupling_base_or_leaf(name, coupling):
    """With a zero gradient the step is pure decay. wd_coupling=base shrinks by 1 - lr*wd whatever the
    leaf's multiplier (muP's invariance: hidden lr_mult 0 still decays 0.999 at lr 1e-2, wd 0.1);
    wd_coupling=leaf shrinks by 1 - lr*mult*wd (a frozen leaf stays put, a halved lr halves the decay)."""
    lr, wd = 1e-2, 0.1
    cfg = optim_config(name=name, lr=lr, weight_decay=wd, wd_coupling=coupling)
    mults = tree_map_specs(lambda s: {"hidden": 0.0, "output": 0.5}.get(s.role, 1.0), SPECS)
    tx = build_optimizer(cfg, SPECS, mults, lambda t: 1.0)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    new = optax.apply_updates(PARAMS, tx.update(zeros, tx.init(PARAMS), PARAMS)[0])
    for key, mult in (("unembed", 0.5), ("embed", 1.0)):
        shrink = 1 - lr * wd * (mult if coupling == "leaf" else 1.0)
        np.testing.assert_allclose(new[key], shrink * PARAMS[key], rtol=1e-6, err_msg=key)
    hidden_shrink = 1.0 if coupling == "leaf" else 1 - lr * wd
    np.testing.assert_allclose(new["blocks"]["wq"], hidden_shrink * PARAMS["blocks"]["wq"], rtol=1e-6)

"""Muon: equivalence with optax.contrib.muon, shape factors, routing by role."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers
from optax.contrib import muon as optax_muon

from scaling.config import ROLES, optim_config
from scaling.optim import build_optimizer
from scaling.testing import toy_grads, toy_params, toy_specs
from scaling.specs import tree_map_specs

SPECS = toy_specs(d=8, layers=2, vocab=16)
PARAMS = toy_params(SPECS, seed=0)
ONES = tree_map_specs(lambda s: 1.0, SPECS)
SCHEDULE = lambda t: 0.5 + 0.5 * jnp.cos(t / 7.0)  # noqa: E731  (a non-trivial schedule multiplier)


def grad_sequence(steps, seed=1):
    return toy_grads(PARAMS, seed, steps)


def run(tx, grads, move_params=True):
    """Scan `tx` over a (T, ...) gradient sequence; returns the final params and every step's update."""

    @jax.jit
    def go(grads):
        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u) if move_params else p, s), u

        (p, _), us = jax.lax.scan(step, (PARAMS, tx.init(PARAMS)), grads)
        return p, us

    return go(grads)


def optax_equivalent(cfg):
    """optax.contrib.muon with the settings that make it our Muon (all lr multipliers 1):
    - muon_weight_dimension_numbers from roles: hidden (..., fi, fo) -> (reduction=-2, output=-1), else None,
      so embedding/output/stacked gains go to AdamW instead of being orthogonalised by ndim;
    - adam_learning_rate = fallback lr; adam_weight_decay = weight_decay (decay_roles = every role);
    - consistent_rms=0.2 for shape_scale="moonlight", None for "keller";
    - nesterov as ours (with nesterov=False optax's bias correction is a scalar that NS removes)."""
    dims = tree_map_specs(lambda s: MuonDimensionNumbers(len(s.shape) - 2, len(s.shape) - 1)
                          if s.role == "hidden" else None, SPECS)
    return optax_muon(lambda t: cfg.lr * SCHEDULE(t), beta=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay,
                      nesterov=cfg.nesterov, adam_b1=cfg.b1, adam_b2=cfg.b2, adam_weight_decay=cfg.weight_decay,
                      adam_learning_rate=lambda t: cfg.fallback_lr * SCHEDULE(t), muon_weight_dimension_numbers=dims,
                      consistent_rms=0.2 if cfg.shape_scale == "moonlight" else None)


def muon_cfg(**kw):
    base = dict(name="muon", lr=0.02, fallback_lr=3e-3, b1=0.9, b2=0.99, eps=1e-8, momentum=0.9,
                weight_decay=0.1, decay_roles=ROLES)
    return optim_config(**{**base, **kw})


@pytest.mark.parametrize("shape_scale", ["keller", "moonlight"])
def test_matches_optax_muon_trajectory_without_nesterov(shape_scale):
    cfg = muon_cfg(nesterov=False, shape_scale=shape_scale)
    grads = grad_sequence(20)
    ours, _ = run(build_optimizer(cfg, SPECS, ONES, SCHEDULE), grads)
    ref, _ = run(optax_equivalent(cfg), grads)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), ours, ref)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, PARAMS)
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-3  # every leaf trained: the comparison is not vacuous


def test_nesterov_matches_optax_once_bias_correction_vanishes():
    """optax bias-corrects the Nesterov mix (beta*mu/(1-beta^(t+1)) + (1-beta)*g/(1-beta^t)), Keller does not:
    the hidden updates differ early and agree once beta^t is negligible (0.9^150 ~ 1e-7). Params are held
    fixed so both see the same W. (optax's AdamW part is NAdam under nesterov=True, ours is not: hidden only.)"""
    cfg = muon_cfg(nesterov=True)
    grads = grad_sequence(150)
    _, ours = run(build_optimizer(cfg, SPECS, ONES, SCHEDULE), grads, move_params=False)
    _, ref = run(optax_equivalent(cfg), grads, move_params=False)
    for a, b in zip(jax.tree_util.tree_leaves(ours["blocks"]), jax.tree_util.tree_leaves(ref["blocks"])):
        if a.ndim == 4:  # stacked hidden kernels (T, L, fi, fo)
            assert float(jnp.max(jnp.abs(a[1] - b[1]))) > 1e-4  # second step differs: 10x the tolerance below
            np.testing.assert_allclose(a[-1], b[-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape_scale,factor", [("keller", lambda fi, fo: np.sqrt(max(1, fo / fi))),
                                                ("moonlight", lambda fi, fo: 0.2 * np.sqrt(max(fi, fo))),
                                                ("spectral", lambda fi, fo: np.sqrt(fo / fi))])
def test_shape_factor_sets_the_spectral_norm_of_hidden_updates(shape_scale, factor):
    cfg = muon_cfg(shape_scale=shape_scale, weight_decay=0.0)
    tx = build_optimizer(cfg, SPECS, ONES, lambda t: 1.0)
    upd, _ = jax.jit(tx.update)(toy_grads(PARAMS, seed=3), tx.init(PARAMS), PARAMS)
    for name in ("w_in", "w_out", "wq"):  # (8, 32), (32, 8), (8, 8): the factors differ between variants
        spec = SPECS["blocks"][name]
        spectral_norm = np.linalg.norm(np.asarray(upd["blocks"][name]), ord=2, axis=(-2, -1))
        ratio = spectral_norm / (cfg.lr * factor(spec.fan_in, spec.fan_out))
        assert np.all(ratio > 0.68) and np.all(ratio < 1.21), (name, ratio)  # the NS5 band, per layer


def test_routing_reads_roles_not_ndim():
    """Stacked gains (L, d) are 2-D but vectors: AdamW, whose first step is lr * sign(g). Embedding and output
    too (at the fallback lr). Each stacked hidden layer is orthogonalised on its own."""
    cfg = muon_cfg(weight_decay=0.0)
    tx = build_optimizer(cfg, SPECS, ONES, lambda t: 1.0)
    g = toy_grads(PARAMS, seed=4)
    upd, _ = jax.jit(tx.update)(g, tx.init(PARAMS), PARAMS)
    for leaf in ("embed", "unembed", "final_norm"):
        np.testing.assert_allclose(upd[leaf], -cfg.fallback_lr * np.sign(g[leaf]), rtol=1e-4)
    gains = g["blocks"]["attn_norm"]
    np.testing.assert_allclose(upd["blocks"]["attn_norm"], -cfg.fallback_lr * np.sign(gains), rtol=1e-4)
    # a stacked kernel whose layers differ in scale by 1000x still gets unit-scale updates in each layer
    wq = g["blocks"]["wq"].at[0].multiply(1000.0)
    upd, _ = jax.jit(tx.update)({**g, "blocks": {**g["blocks"], "wq": wq}}, tx.init(PARAMS), PARAMS)
    per_layer = np.linalg.norm(np.asarray(upd["blocks"]["wq"]), ord=2, axis=(-2, -1))
    np.testing.assert_allclose(per_layer[0], per_layer[1], rtol=0.3)


@pytest.mark.parametrize("method", ["gram", "auto"])
def test_gram_newton_schulz_gives_nearly_the_same_trajectory(method):
    """optim.ns_method changes only the arithmetic of Newton–Schulz: the trajectory stays within 1e-5
    of the direct one (toy matrices are (8, 32) MLP-like and square)."""
    grads = grad_sequence(20)
    direct, _ = run(build_optimizer(muon_cfg(ns_method="direct"), SPECS, ONES, SCHEDULE), grads)
    other, _ = run(build_optimizer(muon_cfg(ns_method=method), SPECS, ONES, SCHEDULE), grads)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), direct, other)
    assert 0 < max(jax.tree_util.tree_leaves(diffs)) < 1e-5, diffs

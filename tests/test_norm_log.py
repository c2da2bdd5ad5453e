"""Norm logging: the tied readout's RMS->inf norm, updates divided by each leaf's own lr, per-layer vectors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import models, norms
from scaling.config import ModelConfig
from scaling.norm_log import flatten_for_log, norm_metrics
from scaling.train import train
from tests.conftest import tiny_config


def test_tied_readout_norm_is_logged_as_the_output_norm():
    cfg = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2, tie_embeddings=True)
    params, specs = models.init(cfg, jax.random.PRNGKey(0))
    assert "unembed" not in params
    m = flatten_for_log(norm_metrics(specs, params))
    readout = float(norms.rms_to_inf(params["embed"].T))
    assert m["opnorm/param/embed.T"] == pytest.approx(readout, rel=1e-6)
    assert m["norm/param/output"] == pytest.approx(readout, rel=1e-6)
    assert m["norm/param/embedding"] == pytest.approx(float(norms.l1_to_rms(params["embed"])), rel=1e-6)


def test_stacked_vectors_report_the_largest_layer():
    cfg = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2)
    params, specs = models.init(cfg, jax.random.PRNGKey(0))
    params["blocks"]["attn_gain"] = jnp.stack([jnp.ones(32), 3 * jnp.ones(32)])
    m = flatten_for_log(norm_metrics(specs, params))
    assert m["opnorm/param/blocks.attn_gain/0"] == pytest.approx(1.0)
    assert m["opnorm/param/blocks.attn_gain/1"] == pytest.approx(3.0)
    assert m["norm/param/vector"] == pytest.approx(3.0)  # one RMS over both layers would say sqrt(5)


def test_updates_are_divided_by_each_leafs_own_learning_rate(tmp_path):
    """Muon with fallback_lr = 0.1 lr and the output's lr halved by its multiplier: the AdamW fallback's
    first step is lr_leaf * sign(g) (up to eps), so the output update's RMS reads 1 (it read 0.1 when every
    leaf was divided by optim.lr); the hidden leaves are divided by optim.lr; a frozen leaf reads 0."""
    cfg = tiny_config("optim.name=muon", "optim.lr=0.02", "optim.fallback_lr=0.002", "param.lr_mult.output=0.5",
                      "param.lr_mult.vector=0", "run.steps=1")
    train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == 1)
    assert first["rms/update/output"] == pytest.approx(1.0, rel=1e-4)
    assert first["rms/update/vector"] == 0.0
    # Muon's hidden step: shape factor x NS(momentum), whose singular values lie in NS5's band around 1
    assert 0.5 < first["norm/update/hidden"] < 2.0
    np.testing.assert_allclose(first["lr"], 0.02)

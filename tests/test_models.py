"""Models: specs mirror params, causality, parameter counts, muP == SP at the base width, inits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import models, norms
from scaling.config import ModelConfig, ParamConfig
from scaling.specs import ParamSpec

TINY_T = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2)
TINY_MLP = ModelConfig(kind="mlp", width=32, depth=3, context=16, window=4)


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, ParamSpec))


@pytest.mark.parametrize("cfg", [TINY_T, TINY_MLP, ModelConfig(width=32, depth=2, n_heads=2, context=16,
                                                                mlp="gelu", tie_embeddings=True, norm_gain=False,
                                                                norm_everywhere=True)])
def test_every_leaf_has_a_matching_spec(cfg):
    params, specs = models.init(cfg, jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        jax.tree_util.tree_map(lambda s: 0, specs, is_leaf=lambda x: isinstance(x, ParamSpec)))
    for p, s in zip(jax.tree_util.tree_leaves(params), _leaves(specs)):
        assert p.shape == s.shape
        if s.is_matrix:
            assert p.shape[-2:] == (s.fan_in, s.fan_out)


@pytest.mark.parametrize("cfg", [TINY_T, TINY_MLP])
def test_causality(cfg):
    """Changing tokens after position t leaves the logits at positions <= t unchanged."""
    params, _ = models.init(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, cfg.context))
    b = a.copy()
    t = 7
    b[:, t + 1:] = rng.integers(0, 256, size=(2, cfg.context - t - 1))
    la = models.apply(cfg, params, jnp.asarray(a))
    lb = models.apply(cfg, params, jnp.asarray(b))
    np.testing.assert_array_equal(np.asarray(la[:, :t + 1]), np.asarray(lb[:, :t + 1]))
    assert not np.allclose(np.asarray(la[:, t + 1:]), np.asarray(lb[:, t + 1:]))


def test_parameter_counts_match_formula():
    D, L, V, F, H, K = 32, 2, 256, 64, 2, 16
    _, specs = models.init(TINY_T, jax.random.PRNGKey(0))
    counts = models.count_params(specs)
    per_block = 4 * D * H * K + 3 * D * F + 2 * D  # q,k,v,o + swiglu (gate, up, down) + 2 gains
    assert counts["n_params"] == V * D + L * per_block + D + D * V
    assert counts["n_params_nonembedding"] == counts["n_params"] - V * D
    tied = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2, mlp="gelu", tie_embeddings=True)
    _, specs_tied = models.init(tied, jax.random.PRNGKey(0))
    per_block_gelu = 4 * D * H * K + 2 * D * F + 2 * D
    assert models.count_params(specs_tied)["n_params"] == V * D + L * per_block_gelu + D


@pytest.mark.parametrize("cfg", [TINY_T, TINY_MLP, ModelConfig(width=32, depth=2, n_heads=2, context=16,
                                                                tie_embeddings=True)])
def test_mup_equals_sp_at_base_width(cfg):
    key = jax.random.PRNGKey(3)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(2, cfg.context)))
    p_sp, _ = models.init(cfg, key, ParamConfig(kind="sp"))
    mup = ParamConfig(kind="mup", base_width=cfg.width)
    p_mup, _ = models.init(cfg, key, mup)
    for a, b in zip(jax.tree_util.tree_leaves(p_sp), jax.tree_util.tree_leaves(p_mup)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(models.apply(cfg, p_sp, tokens)),
                                  np.asarray(models.apply(cfg, p_mup, tokens, param=mup)))


def test_mup_scales_init_with_width():
    wide = ModelConfig(width=128, depth=1, n_heads=2, context=8, mlp_ratio=2)
    mup = ParamConfig(kind="mup", base_width=32, init_std=0.02)
    params, specs = models.init(wide, jax.random.PRNGKey(0), mup)
    m = 128 / 32
    assert specs["blocks"]["wq"].fan_in_base == 32
    assert np.std(np.asarray(params["blocks"]["wq"])) == pytest.approx(0.02 / math.sqrt(m), rel=0.05)
    assert np.std(np.asarray(params["unembed"])) == pytest.approx(0.02 / m, rel=0.05)
    assert np.std(np.asarray(params["embed"])) == pytest.approx(1.0, rel=0.05)


def test_spectral_init_norms():
    """Hidden rms->rms = 1 (before the 1/sqrt(2L) residual factor), output rms->inf = 1, embedding 1->RMS = 1."""
    cfg = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2, residual_out_init=True)
    params, specs = models.init(cfg, jax.random.PRNGKey(0), ParamConfig(kind="spectral"))
    for p, s in zip(jax.tree_util.tree_leaves(params), _leaves(specs)):
        if s.role == "hidden":
            expect = 1 / math.sqrt(2 * cfg.depth) if s.residual_out else 1.0
            np.testing.assert_allclose(np.asarray(norms.rms_to_rms(p)), expect, rtol=1e-4)
    np.testing.assert_allclose(float(norms.rms_to_inf(params["unembed"])), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(norms.l1_to_rms(params["embed"])), 1.0, rtol=1e-5)


def test_initial_loss_is_log_vocab():
    params, _ = models.init(TINY_T, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(4, 17)))
    assert float(models.loss_fn(TINY_T, params, tokens)) == pytest.approx(math.log(256), abs=0.05)


def test_bf16_compute_is_close_to_fp32():
    params, _ = models.init(TINY_T, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(2, 17)))
    l32 = float(models.loss_fn(TINY_T, params, tokens))
    l16 = float(models.loss_fn(TINY_T, params, tokens, compute_dtype=jnp.bfloat16))
    assert l16 == pytest.approx(l32, abs=0.02) and l16 != l32


def test_scanned_and_unrolled_blocks_agree():
    import dataclasses

    params, _ = models.init(TINY_T, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(2, 16)))
    scanned = dataclasses.replace(TINY_T, scan_layers=True)
    np.testing.assert_allclose(np.asarray(models.apply(TINY_T, params, tokens)),
                               np.asarray(models.apply(scanned, params, tokens)), rtol=1e-5, atol=1e-5)


def _reference_attention(q, k, v, scale):
    """Plain softmax attention with a boolean causal mask, differentiated by autodiff."""
    T = q.shape[-2]
    logits = jnp.einsum("bhqk,bhsk->bhqs", q, k) * scale
    logits = jnp.where(jnp.tril(jnp.ones((T, T), bool)), logits, -jnp.inf)
    return jnp.einsum("bhqs,bhsk->bhqk", jax.nn.softmax(logits, axis=-1), v)


def test_attention_custom_vjp_matches_autodiff():
    from scaling.models.layers import causal_attention

    q, k, v, w = (jnp.asarray(np.random.default_rng(i).standard_normal((2, 3, 8, 4)), jnp.float32) for i in range(4))
    objective = lambda f: lambda q, k, v: jnp.sum(f(q, k, v, 0.37) * w)  # noqa: E731
    ours = jax.value_and_grad(objective(causal_attention), argnums=(0, 1, 2))(q, k, v)
    ref = jax.value_and_grad(objective(_reference_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_rope_rotates_pairs_and_keeps_norms():
    from scaling.models.layers import apply_rope, rope_tables

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 3, 8)), jnp.float32)
    cos, sin = rope_tables(5, 8, 10_000.0)
    y = np.asarray(apply_rope(x, cos, sin))
    x1, x2 = np.asarray(x)[..., :4], np.asarray(x)[..., 4:]
    expected = np.concatenate([x1 * cos[None, :, None] - x2 * sin[None, :, None],
                               x2 * cos[None, :, None] + x1 * sin[None, :, None]], axis=-1)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["sp", "mup", "spectral", "scion"])
def test_residual_out_init_flag_scales_only_residual_projections(kind):
    """model.residual_out_init multiplies the init of the attention-output and MLP-output kernels by
    1/sqrt(2L) when on, and leaves them alone when off (the default); other kernels never change."""
    import dataclasses

    param = ParamConfig(kind=kind, init_std=0.02 if kind in ("sp", "mup") else 0.0)
    cfg = ModelConfig(width=64, depth=4, n_heads=2, context=16, mlp_ratio=2)
    assert not cfg.residual_out_init  # the documented default
    off, specs = models.init(cfg, jax.random.PRNGKey(0), param)
    on, _ = models.init(dataclasses.replace(cfg, residual_out_init=True), jax.random.PRNGKey(0), param)
    for name in ("wo", "w_out"):
        assert specs["blocks"][name].residual_out
        ratio = np.std(np.asarray(on["blocks"][name])) / np.std(np.asarray(off["blocks"][name]))
        assert ratio == pytest.approx(1 / math.sqrt(2 * cfg.depth), rel=1e-5)
    if kind in ("sp", "mup"):  # the flag off: the plain init std
        assert np.std(np.asarray(off["blocks"]["wo"])) == pytest.approx(0.02, rel=0.05)
    for name in ("wq", "w_up", "w_gate"):
        np.testing.assert_array_equal(np.asarray(on["blocks"][name]), np.asarray(off["blocks"][name]))

"""Scion: LMO identities per norm (notes section 7), boundary init, and the norm invariants of training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling.config import optim_config, PerRole, PerRoleNorm
from scaling.optim import boundary_init as _boundary_init
from scaling.optim import scion
from scaling.optim.lmo import dual_norm as _dual_norm
from scaling.optim.lmo import lmo as _lmo
from scaling.optim.lmo import norm as _norm
from scaling.optim.lmo import polar_svd
from scaling.testing import toy_grads, toy_specs
from scaling.specs import ParamSpec, tree_map_specs

G = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # a (fan_in=2, fan_out=3) kernel without zeros
KERNEL = ParamSpec((2, 3), "hidden", 2, 3, ("in", "out"))
DUAL = {"spectral": 12.591482, "colnorm": 21.679425, "rownorm": 11.466779, "sign": 10.5}

# jitted once per (spec, norm, radius, polar): far fewer compilations than op-by-op
lmo = jax.jit(_lmo, static_argnums=(1, 2, 3, 4))
norm = jax.jit(_norm, static_argnums=(1, 2))
dual_norm = jax.jit(_dual_norm, static_argnums=(1, 2))
boundary_init = jax.jit(_boundary_init, static_argnums=(0, 2, 3))


@pytest.mark.parametrize("name", sorted(DUAL))
@pytest.mark.parametrize("radius", [1.0, 2.0])
def test_lmo_identities(name, radius):
    x = lmo(G, KERNEL, name, radius, polar_svd)
    np.testing.assert_allclose(norm(x, KERNEL, name), radius, rtol=1e-5)  # on the sphere of the ball
    np.testing.assert_allclose(dual_norm(G, KERNEL, name), DUAL[name], rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(G * x), -radius * DUAL[name], rtol=1e-5)  # <g, lmo(g)> = -rho ||g||_*
    np.testing.assert_allclose(lmo(1e-4 * G, KERNEL, name, radius, polar_svd), x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lmo(1e4 * G, KERNEL, name, radius, polar_svd), x, rtol=1e-5, atol=1e-6)


def test_bias_rms_lmo_reference():
    spec = ParamSpec((4,), "vector", 1, 4, ("embed",))
    g = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(-_lmo(g, spec, "bias_rms"), [0.365148, 0.730297, 1.095445, 1.460593], rtol=1e-5)
    np.testing.assert_allclose(dual_norm(g, spec, "bias_rms"), 10.954451, rtol=1e-6)
    np.testing.assert_allclose(_norm(_lmo(g, spec, "bias_rms", 2.0), spec, "bias_rms"), 2.0, rtol=1e-6)


def test_lmo_of_stacked_kernels_is_per_layer_and_no_lmo_beats_it():
    spec = ParamSpec((3, 6, 10), "hidden", 6, 10, ("layer", "in", "out"))
    g = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6, 10)), jnp.float32)

    @jax.jit
    def per_layer(g):  # for every norm: ||lmo||, <g, lmo>, ||g||_*, <g, another point of the unit sphere>
        out = {}
        for name in DUAL:
            x = _lmo(g, spec, name, 1.0, polar_svd)
            other = _boundary_init(spec, jax.random.PRNGKey(0), name, 1.0)
            out[name] = (_norm(x, spec, name), jnp.sum(g * x, axis=(-2, -1)), _dual_norm(g, spec, name),
                         jnp.sum(g * other, axis=(-2, -1)))
        return out

    for name, (size, best, dual, other) in per_layer(g).items():
        np.testing.assert_allclose(size, 1.0, rtol=1e-5)
        np.testing.assert_allclose(best, -dual, rtol=1e-5)
        assert np.all(np.asarray(other) > np.asarray(best)), name


def test_newton_schulz_lmo_is_within_the_ns_band():
    """The default (NS5) spectral oracle is approximate: its RMS->RMS norm lies in the NS band, not at 1."""
    spec = ParamSpec((4, 16, 32), "hidden", 16, 32, ("layer", "in", "out"))
    g = jnp.asarray(np.random.default_rng(1).standard_normal((4, 16, 32)), jnp.float32)
    n = np.asarray(norm(_lmo(g, spec, "spectral", 1.0), spec, "spectral"))
    assert np.all(n > 0.68) and np.all(n < 1.21)


@pytest.mark.parametrize("name", ["spectral", "colnorm", "rownorm", "sign"])
def test_boundary_init_lies_on_the_sphere(name):
    spec = ParamSpec((2, 12, 20), "hidden", 12, 20, ("layer", "in", "out"))
    w = boundary_init(spec, jax.random.PRNGKey(0), name, 3.0)
    assert w.shape == spec.shape and w.dtype == jnp.float32
    np.testing.assert_allclose(norm(w, spec, name), 3.0, rtol=1e-5)
    if name == "spectral":  # every singular value, not only the largest, is sqrt(fo/fi) * radius
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 3.0 * np.sqrt(20 / 12), rtol=1e-5)
    gain = ParamSpec((5,), "vector", 1, 5, ("embed",), const_init=1.0)
    np.testing.assert_array_equal(_boundary_init(gain, jax.random.PRNGKey(0), "bias_rms"), 1.0)
    if name != "sign":  # sign also serves vectors (fan_in 1); matrix norms do not
        with pytest.raises(ValueError, match="vector"):
            _boundary_init(gain, jax.random.PRNGKey(0), name)


SPECS = toy_specs(d=8, layers=2, vocab=16, d_ff=16)
NORMS = PerRoleNorm(embedding="colnorm", hidden="spectral", output="rownorm", vector="bias_rms")
RADIUS = PerRole(embedding=2.0, hidden=3.0, output=5.0, vector=1.0)
NORM_OF_ROLE = dataclasses.asdict(NORMS)


def scion_run(constrained, polar, steps=25):
    """Train from the boundary init on random gradients; return every step's norms per leaf and sum of lrs."""
    leaves, treedef = jax.tree_util.tree_flatten(SPECS, is_leaf=lambda x: isinstance(x, ParamSpec))
    params = jax.tree_util.tree_unflatten(treedef, [
        _boundary_init(s, jax.random.PRNGKey(i), NORM_OF_ROLE[s.role], RADIUS.get(s.role))
        for i, s in enumerate(leaves)])
    cfg = optim_config(name="scion", lr=0.2, alpha=0.5, constrained=constrained, norms=NORMS, radius=RADIUS)
    mults = tree_map_specs(lambda s: 0.5 if s.role == "hidden" else 1.0, SPECS)
    schedule = lambda t: 1.0 / (1.0 + t)  # noqa: E731
    tx = scion.build(cfg, SPECS, mults, schedule, polar=polar)
    grads = toy_grads(params, seed=2, steps=steps)

    @jax.jit
    def go(params, grads):
        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), tree_map_specs(lambda sp, w: _norm(w, sp, NORM_OF_ROLE[sp.role]), SPECS, p)
        return jax.lax.scan(step, (params, tx.init(params)), grads)[1]

    norms = go(params, grads)
    lr_sum = {role: cfg.lr * sum(schedule(t) for t in range(steps)) * (0.5 if role == "hidden" else 1.0)
              for role in NORM_OF_ROLE}
    return norms, lr_sum


def test_constrained_scion_stays_in_the_ball():
    norms, _ = scion_run(constrained=True, polar=polar_svd)
    for spec, n in zip(jax.tree_util.tree_leaves(SPECS, is_leaf=lambda x: isinstance(x, ParamSpec)),
                       jax.tree_util.tree_leaves(norms)):
        assert np.all(np.asarray(n) <= RADIUS.get(spec.role) * (1 + 1e-5)), (spec.role, np.max(n))
    # (with the default Newton–Schulz oracle the hidden bound is rho times the NS5 band's top, ~1.2 rho)


def test_unconstrained_scion_grows_at_most_radius_times_lr_sum():
    norms, lr_sum = scion_run(constrained=False, polar=polar_svd)
    leaves = jax.tree_util.tree_leaves(SPECS, is_leaf=lambda x: isinstance(x, ParamSpec))
    grew = False
    for spec, n in zip(leaves, jax.tree_util.tree_leaves(norms)):
        rho = RADIUS.get(spec.role)
        bound = rho + rho * lr_sum[spec.role]  # every leaf starts at norm rho (gains: RMS 1 = RADIUS.vector)
        assert np.all(np.asarray(n) <= bound * (1 + 1e-5)), (spec.role, np.max(n), bound)
        grew |= bool(np.max(n) > rho * 1.01)
    assert grew  # unconstrained norms do leave the ball


@pytest.mark.parametrize("tied,output_norm", [(False, "sign"), (False, "rownorm"), (True, "sign")])
def test_readout_unit_step_has_the_same_rms_to_inf_norm_at_every_width(tied, output_norm):
    """Width transfer needs the readout's unit step (radius 1) to have an RMS->inf norm independent of the
    width. Untied: the output matrix. Tied: the embedding (V, d), whose transpose is the readout; Sign on it
    is scaled by 1/d (modded-nanogpt's tied Scion), not 1/vocab (measured 0.125, 0.5, 2.0 before)."""
    from scaling import models
    from scaling.config import ModelConfig
    from scaling.norms import rms_to_inf

    values = []
    for width in (32, 128, 512):
        cfg = ModelConfig(kind="mlp", width=width, depth=1, context=8, window=2, tie_embeddings=tied)
        specs = models.param_specs(cfg)
        spec = specs["embed"] if tied else specs["unembed"]
        g = jnp.asarray(np.random.default_rng(width).standard_normal(spec.shape), jnp.float32)
        step = -_lmo(g, spec, "sign" if tied else output_norm, 1.0, polar_svd)
        values.append(float(rms_to_inf(step.T if tied else step)))
    np.testing.assert_allclose(values, 1.0, rtol=1e-5)


def test_untied_sign_embedding_is_unnormalised_sign():
    """An untied embedding's fan_in is the vocabulary (one-hot input): Sign there is sign(g) and its
    boundary init is +-radius (the reference's Sign(normalized=False)); not divided by the vocabulary."""
    from scaling import models
    from scaling.config import ModelConfig

    spec = models.param_specs(ModelConfig(kind="mlp", width=16, depth=1, context=8, window=2))["embed"]
    assert spec.fan_in == 256 and not spec.tied_output
    g = jnp.asarray(np.random.default_rng(0).standard_normal(spec.shape), jnp.float32)
    np.testing.assert_array_equal(-_lmo(g, spec, "sign", 2.0), 2.0 * jnp.sign(g))
    w = _boundary_init(spec, jax.random.PRNGKey(0), "sign", 3.0)
    np.testing.assert_array_equal(np.abs(np.asarray(w)), 3.0)
    np.testing.assert_allclose(_norm(w, spec, "sign"), 3.0)
    tied = models.param_specs(ModelConfig(kind="mlp", width=16, depth=1, context=8, window=2, tie_embeddings=True))
    np.testing.assert_allclose(np.abs(np.asarray(_boundary_init(tied["embed"], jax.random.PRNGKey(0), "sign"))), 1 / 16)


def test_tied_embedding_takes_sign_only():
    from scaling.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="optim.norms.embedding='colnorm' with model.tie_embeddings=true"):
        load_config(overrides=["optim.name=scion", "model.tie_embeddings=true"])
    assert load_config(overrides=["optim.name=scion", "model.tie_embeddings=true", "optim.norms.embedding=sign"])

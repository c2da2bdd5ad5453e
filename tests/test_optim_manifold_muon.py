"""Manifold Muon: hidden matrices stay on the Stiefel manifold; the step is a tangent descent direction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import optim_config
from scaling.optim import boundary_init, build_optimizer
from scaling.optim.manifold_muon import tangent_direction as _tangent_direction
from scaling.specs import ParamSpec, tree_map_specs


def hidden(fi, fo):
    return ParamSpec((2, fi, fo), "hidden", fi, fo, ("layer", "in", "out"))


tangent_direction = jax.jit(_tangent_direction, static_argnums=2)
SPECS = {"tall": hidden(16, 8), "wide": hidden(8, 16), "square": hidden(12, 12),
         "embed": ParamSpec((10, 8), "embedding", 10, 8, ("vocab", "embed")),
         "gain": ParamSpec((8,), "vector", 1, 8, ("embed",), const_init=1.0)}


def semi_orthogonal_params():
    """Hidden weights start on the manifold: semi-orthogonal (all singular values 1) in either orientation."""
    return {k: boundary_init(s, jax.random.PRNGKey(i), "spectral", radius=np.sqrt(s.fan_in / s.fan_out))
            if s.role == "hidden" else jnp.ones(s.shape) for i, (k, s) in enumerate(SPECS.items())}


def gram_error(w):
    """max |WᵀW - I| in the tall orientation (WWᵀ for a wide kernel)."""
    w = w if w.shape[-2] >= w.shape[-1] else jnp.swapaxes(w, -1, -2)
    return jnp.max(jnp.abs(jnp.swapaxes(w, -1, -2) @ w - jnp.eye(w.shape[-1])[None]))


def test_hidden_weights_stay_on_the_stiefel_manifold():
    cfg = optim_config(name="manifold_muon", lr=0.2, momentum=0.9, dual_steps=5)
    tx = build_optimizer(cfg, SPECS, tree_map_specs(lambda s: 1.0, SPECS), lambda t: 1.0)
    params = semi_orthogonal_params()
    rng = np.random.default_rng(0)
    grads = {k: jnp.asarray(rng.standard_normal((25,) + s.shape), jnp.float32) for k, s in SPECS.items()}

    @jax.jit
    def go(params, grads):
        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), ({k: gram_error(p[k]) for k in ("tall", "wide", "square")}, p)
        return jax.lax.scan(step, (params, tx.init(params)), grads)[1]

    errors, trajectory = go(params, grads)
    for k, e in errors.items():
        assert float(jnp.max(e)) < 1e-4, (k, float(jnp.max(e)))
        moved = float(jnp.max(jnp.abs(trajectory[k][-1] - params[k])))
        assert moved > 0.1, k  # the weights did travel along the manifold


def violation(w, d):
    """RMS of WᵀD + DᵀW in the tall orientation: 0 in the tangent space at W."""
    if w.shape[-2] < w.shape[-1]:
        w, d = jnp.swapaxes(w, -1, -2), jnp.swapaxes(d, -1, -2)
    h = jnp.swapaxes(w, -1, -2) @ d + jnp.swapaxes(d, -1, -2) @ w
    return float(jnp.sqrt(jnp.mean(h ** 2)))


def test_tangent_direction_is_a_unit_descent_direction_in_the_tangent_space():
    rng = np.random.default_rng(1)
    for fi, fo in ((24, 8), (8, 24)):
        w = boundary_init(hidden(fi, fo), jax.random.PRNGKey(0), "spectral", radius=np.sqrt(fi / fo))
        g = jnp.asarray(rng.standard_normal((2, fi, fo)), jnp.float32)
        rough, fine = (tangent_direction(w, g, k) for k in (1, 100))
        assert violation(w, fine) < 0.2 * violation(w, rough)  # dual ascent moves D into the tangent space
        np.testing.assert_allclose(np.linalg.norm(np.asarray(fine), 2, axis=(-2, -1)), 1.0, atol=1e-4)
        assert np.all(np.asarray(jnp.sum(g * fine, axis=(-2, -1))) > 0)  # W - lr*D descends
    # for a square W the initial dual guess is optimal: tangent at once
    w = boundary_init(hidden(12, 12), jax.random.PRNGKey(1), "spectral")
    d = tangent_direction(w, jnp.asarray(rng.standard_normal((2, 12, 12)), jnp.float32), 1)
    assert violation(w, d) < 1e-6


def test_hidden_weights_start_on_the_manifold_and_stay_there():
    """The model's init projects hidden matrices onto the Stiefel manifold (WᵀW = I, tall orientation)
    when the optimizer is manifold Muon, so the first tangent step is taken on it; training keeps it."""
    from scaling import models, parametrization
    from scaling.config import ModelConfig, ParamConfig

    cfg = ModelConfig(width=32, depth=2, n_heads=2, context=16, mlp_ratio=2)
    param, optim = ParamConfig(kind="spectral"), optim_config(name="manifold_muon", lr=1e-2, dual_steps=20)
    params, specs = models.init(cfg, jax.random.PRNGKey(0), param, optim)

    def gram_error(w):
        w = np.asarray(w, np.float64)
        if w.shape[-2] < w.shape[-1]:
            w = np.swapaxes(w, -1, -2)
        return np.max(np.abs(np.swapaxes(w, -1, -2) @ w - np.eye(w.shape[-1])))

    hidden = [(p, s) for p, s in zip(jax.tree_util.tree_leaves(params),
                                     jax.tree_util.tree_leaves(specs, is_leaf=lambda x: hasattr(x, "role")))
              if s.role == "hidden"]
    assert hidden and max(gram_error(p) for p, _ in hidden) < 1e-5
    assert gram_error(models.init(cfg, jax.random.PRNGKey(0), param)[0]["blocks"]["w_up"]) > 0.5  # sigma = sqrt(2)

    tx = build_optimizer(optim, specs, parametrization.lr_multipliers(specs, param, optim), lambda t: 1.0)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(4, 17)), jnp.int32)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: models.loss_fn(cfg, p, tokens, param=param))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(5):
        params, state = step(params, state)
    for name in ("wq", "wo", "w_up", "w_out"):
        assert gram_error(params["blocks"][name]) < 5e-3, name

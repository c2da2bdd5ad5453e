"""Manifold Muon: hidden matrices live on the Stiefel manifold {W : all singular values 1}
(Bernstein, "Modular Manifolds", Thinking Machines 2025; thinking-machines-lab/manifolds
`src/manifold_muon.py`).

Per hidden matrix, in the tall orientation (m >= n; a wide (fan_in < fan_out) kernel is transposed, so the
invariant is WᵀW = I for fan_in >= fan_out and WWᵀ = I otherwise), with G the Muon momentum of the
gradient (optim.momentum, optim.nesterov; momentum=0 is the reference's raw gradient):
  steepest descent in the spectral norm restricted to the tangent space {A : WᵀA + AᵀW = 0}, solved by
  dual ascent on a symmetric Lambda:
    Lambda <- -1/4 (WᵀG + GᵀW)
    repeat up to optim.dual_steps times:   D = msign(G + 2 W Lambda);  H = WᵀD + DᵀW
        stop once RMS(H) < 1e-6;            Lambda <- Lambda - 0.01 (1 - k/K) H
  then the step and the retraction back onto the manifold: W <- msign(W - eta D), eta = lr * schedule * lr_mult.
msign is Polar Express, 10 steps in float32 (five Polar Express triples, then the convergent (15, -10, 3)/8).
[derived] G is divided by its Frobenius norm first: D does not depend on G's scale, and this makes the
dual step 0.01 a relative one (the reference uses the raw gradient).
Hidden matrices are projected onto the manifold at init (parametrization.init_params, exact polar factor).
Embedding, output and vector roles use the AdamW fallback at optim.fallback_lr (0 -> lr), as in Muon.
Weight decay never touches hidden matrices (the retraction would undo it); other roles follow common.py.
"""

from __future__ import annotations

from typing import Any

import dataclasses

import jax
import jax.numpy as jnp
import optax

from scaling.config_io import require
from scaling.optim.adamw import AdamWFallback
from scaling.optim.common import apply_lr, base_lrs, hyper_values, map_with_specs, route, scale_and_decay
from scaling.optim.muon import FALLBACK_ROLES, HYPERPARAMETERS, MuonMomentum, muon_momentum
from scaling.optim.newton_schulz import newton_schulz, polar_svd
from scaling.optim.section import OptimConfig
from scaling.specs import tree_map_specs

DUAL_LR = 0.01
TOLERANCE = 1e-6
MSIGN_STEPS = 10


@dataclasses.dataclass(frozen=True)
class ManifoldMuonConfig(AdamWFallback, MuonMomentum, OptimConfig):
    name: str = "manifold_muon"
    dual_steps: int = 100  # iterations of dual ascent for the tangent direction (early stop at TOLERANCE)

    def check(self) -> None:
        require(self.dual_steps > 0, f"optim.dual_steps={self.dual_steps} must be positive")


def msign(x: jax.Array) -> jax.Array:
    return newton_schulz(x, MSIGN_STEPS, "polar_express")


def project_to_manifold(w: jax.Array) -> jax.Array:
    """The nearest point of the Stiefel manifold: the exact polar factor UVᵀ (all singular values 1).
    Applied to hidden matrices at init, so the first tangent step is taken on the manifold."""
    return polar_svd(w)


def _mT(x):
    return jnp.swapaxes(x, -1, -2)


def _rms(x):
    return jnp.sqrt(jnp.mean(jnp.square(x), axis=(-2, -1)))


def tangent_direction(w: jax.Array, g: jax.Array, dual_steps: int) -> jax.Array:
    """D (same layout as w) with ||D||_2 = 1 minimising <g, D> over the tangent space at w; batched."""
    wide = w.shape[-2] < w.shape[-1]
    w_MxN, g_MxN = (_mT(w), _mT(g)) if wide else (w, g)
    w_MxN = w_MxN.astype(jnp.float32)
    g_MxN = g_MxN / (jnp.sqrt(jnp.sum(jnp.square(g_MxN), axis=(-2, -1), keepdims=True)) + 1e-30)

    def not_done(carry):
        k, _, _, h_NxN = carry
        return (k < 0) | ((k < dual_steps - 1) & jnp.any(_rms(h_NxN) >= TOLERANCE))

    def dual_ascent_step(carry):
        """Step k >= 0 first moves Lambda by -lr_k H_{k-1} (step -1 keeps the initial guess), then
        computes D_k and H_k. Converged matrices stop moving, as the reference's per-matrix break."""
        k, lam_NxN, _, h_NxN = carry
        still_moving = ((k >= 0) & (_rms(h_NxN) >= TOLERANCE))[..., None, None]
        lam_NxN = lam_NxN - jnp.where(still_moving, DUAL_LR * (1 - k / dual_steps) * h_NxN, 0.0)
        d_MxN = msign(g_MxN + 2 * w_MxN @ lam_NxN)
        h_NxN = _mT(w_MxN) @ d_MxN + _mT(d_MxN) @ w_MxN
        return k + 1, lam_NxN, d_MxN, h_NxN

    lam_NxN = -0.25 * (_mT(w_MxN) @ g_MxN + _mT(g_MxN) @ w_MxN)
    carry = (jnp.asarray(-1, jnp.int32), lam_NxN, jnp.zeros_like(g_MxN), jnp.zeros_like(lam_NxN))
    _, _, d_MxN, _ = jax.lax.while_loop(not_done, dual_ascent_step, carry)
    return _mT(d_MxN) if wide else d_MxN


def scale_by_tangent_direction(specs: Any, beta: float, nesterov: bool, dual_steps: int
                               ) -> optax.GradientTransformation:
    init_momentum, momentum_step = muon_momentum(beta, nesterov)

    def update_fn(grads, state, params):
        u, state = momentum_step(grads, state)
        return map_with_specs(lambda s, u, w: tangent_direction(w, u, dual_steps), specs, u, params), state

    return optax.GradientTransformation(init_momentum, update_fn)


def retract_hidden(specs: Any) -> optax.GradientTransformation:
    """The last link: replace the hidden step delta by msign(W + delta) - W (back onto the manifold)."""

    def update_fn(updates, state, params):
        return tree_map_specs(lambda s, u, w: msign(w + u) - w if s.role == "hidden" else u,
                              specs, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def build(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    """Runtime scalars: Muon's HYPERPARAMETERS (the same momentum and AdamW fallback)."""
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    direction = route(specs, {"hidden": "stiefel", **{r: "adamw" for r in FALLBACK_ROLES}}, {
        "stiefel": scale_by_tangent_direction(specs, hp["momentum"], cfg.nesterov, cfg.dual_steps),
        "adamw": optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
    })
    return optax.chain(
        direction,
        *scale_and_decay(cfg, hp, specs, lr_mults, tuple(r for r in cfg.decay_roles if r != "hidden")),
        apply_lr(base_lrs(specs, hp, FALLBACK_ROLES), schedule),
        retract_hidden(specs),
    )

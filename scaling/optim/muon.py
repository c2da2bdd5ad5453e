"""Muon: momentum orthogonalized by Newton–Schulz on hidden matrices, AdamW on every other role.

Hidden leaf (Keller Jordan, KellerJordan/Muon `muon.py`):
  m <- beta m + (1 - beta) g;   u = beta m + (1 - beta) g  (nesterov)  or  u = m
  direction = s * NS(u)          NS per matrix over the last two axes: stacked (L, fi, fo) kernels
                                 are orthogonalised layer by layer
Shape factor s (optim.shape_scale), from the spec's (fan_in, fan_out) of one matrix:
  keller     sqrt(max(1, fo / fi))        Keller's README
  moonlight  0.2 * sqrt(max(fi, fo))      Liu et al. arXiv 2502.16982 (update RMS ~ 0.2, like AdamW)
  spectral   sqrt(fo / fi)                the spectral condition (Yang, Simon, Bernstein arXiv 2310.17813)
No bias correction (Keller); optax.contrib.muon bias-corrects, which only differs in early steps.
Embedding, output and vector roles: AdamW(b1, b2, eps) at optim.fallback_lr (0 -> lr), not Nesterov.
Weight decay follows scaling/optim/common.py (lr-coupled with the group's base lr, decay_roles mask).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scaling.config_io import require
from scaling.optim.adamw import AdamWFallback
from scaling.optim.common import apply_lr, base_lrs, hyper_values, map_with_specs, route, scale_and_decay
from scaling.optim.newton_schulz import NewtonSchulzSettings, newton_schulz
from scaling.optim.section import OptimConfig
from scaling.sharding import per_matrix

FALLBACK_ROLES = ("embedding", "output", "vector")
# the scalars fed to the compiled step as inputs (scaling/optim/common.py)
HYPERPARAMETERS = ("lr", "b1", "b2", "eps", "weight_decay", "fallback_lr", "momentum")
SHAPE_SCALES = ("keller", "moonlight", "spectral")


@dataclasses.dataclass(frozen=True)
class MuonMomentum:
    """Keller's momentum on hidden matrices (Muon, manifold Muon)."""

    momentum: float = 0.95  # beta
    nesterov: bool = True

    def check(self) -> None:
        require(0 <= self.momentum < 1, f"optim.momentum={self.momentum} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class MuonConfig(AdamWFallback, MuonMomentum, NewtonSchulzSettings, OptimConfig):
    name: str = "muon"
    shape_scale: str = "keller"  # keller | moonlight | spectral

    def check(self) -> None:
        require(self.shape_scale in SHAPE_SCALES,
                f"optim.shape_scale={self.shape_scale!r} must be one of {', '.join(SHAPE_SCALES)}")


def shape_factor(fan_in: int, fan_out: int, shape_scale: str) -> float:
    if shape_scale == "keller":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if shape_scale == "moonlight":
        return 0.2 * math.sqrt(max(fan_in, fan_out))
    if shape_scale == "spectral":
        return math.sqrt(fan_out / fan_in)
    raise ValueError(f"shape_scale={shape_scale!r} must be keller, moonlight or spectral")


class MomentumState(NamedTuple):
    momentum: Any


def muon_momentum(beta: float, nesterov: bool):
    """(init, step) of Keller's momentum: step(g, m) -> (u, m_new). Shared with manifold Muon."""

    def init(params):
        return MomentumState(jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, jnp.float32), params))

    def step(grads, state):
        m = jax.tree_util.tree_map(lambda m, g: beta * m + (1 - beta) * g.astype(jnp.float32), state.momentum, grads)
        u = jax.tree_util.tree_map(lambda m, g: beta * m + (1 - beta) * g, m, grads) if nesterov else m
        return u, MomentumState(m)

    return init, step


def scale_by_muon(specs: Any, beta: float, nesterov: bool, ns_steps: int, ns_coeffs: str, shape_scale: str,
                  ns_dtype=jnp.float32, ns_method: str = "auto") -> optax.GradientTransformation:
    """The direction s * NS(momentum) of every (unmasked) hidden leaf."""
    init_momentum, momentum_step = muon_momentum(beta, nesterov)

    def update_fn(grads, state, params=None):
        del params
        u, state = momentum_step(grads, state)
        # each matrix orthogonalised once, whole (on its owner device when sharded: scaling.sharding)
        orthogonal = per_matrix(lambda x: newton_schulz(x, ns_steps, ns_coeffs, dtype=ns_dtype, method=ns_method),
                                specs, u)
        direction = map_with_specs(lambda s, o: shape_factor(s.fan_in, s.fan_out, shape_scale) * o, specs, orthogonal)
        return direction, state

    return optax.GradientTransformation(init_momentum, update_fn)


def build(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    direction = route(specs, {"hidden": "muon", **{r: "adamw" for r in FALLBACK_ROLES}}, {
        "muon": scale_by_muon(specs, hp["momentum"], cfg.nesterov, cfg.ns_steps, cfg.ns_coeffs, cfg.shape_scale,
                              jnp.dtype(cfg.ns_dtype), cfg.ns_method),
        "adamw": optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
    })
    return optax.chain(
        direction,
        *scale_and_decay(cfg, hp, specs, lr_mults),
        apply_lr(base_lrs(specs, hp, FALLBACK_ROLES), schedule),
    )

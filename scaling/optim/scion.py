"""Scion (Pethick et al., arXiv 2502.07529; LIONS-EPFL/scion `scion.py`).

Per leaf, with the role's norm (optim.norms) and radius rho (optim.radius), eta = lr * schedule * lr_mult:
  d <- (1 - alpha) d + alpha g          momentum as gradient averaging, d0 = 0; alpha = 1 - beta (1 = off)
  unconstrained:  W <- W - eta * rho * unit(d)              (||W|| grows by at most rho * sum eta)
  constrained:    W <- (1 - eta) W - eta * rho * unit(d)    (||W0|| <= rho  =>  ||W|| <= rho, for eta <= 1)
unit() is lmo.unit_direction (= -lmo / rho). Constrained Scion is lr-coupled decay with lambda = 1 at the
leaf's full eta (lr_mult included, so the step stays a convex combination); optim.weight_decay must then
be 0. Unconstrained Scion takes optim.weight_decay with the shared convention (common.py).
The spectral norm's polar factor is Newton–Schulz with optim.ns_steps / ns_coeffs / ns_dtype / ns_method.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scaling.config_io import require
from scaling.optim.common import apply_lr, hyper_values, scale_and_decay, scale_per_leaf
from scaling.optim.lmo import unit_direction
from scaling.optim.newton_schulz import NewtonSchulzSettings, newton_schulz
from scaling.optim.section import OptimConfig
from scaling.sharding import per_matrix
from scaling.specs import ROLES, tree_map_specs


@dataclasses.dataclass(frozen=True)
class ScionConfig(NewtonSchulzSettings, OptimConfig):
    """Scion's norms and radii are the shared optim.norms / optim.radius (scaling.optim.section)."""

    name: str = "scion"
    constrained: bool = False
    alpha: float = 0.1  # momentum as gradient averaging: d <- (1-alpha) d + alpha g; 1 = off

    def check(self) -> None:
        require(0 < self.alpha <= 1, f"optim.alpha={self.alpha} must be in (0, 1] (Scion: 1 means no momentum)")
        require(not (self.constrained and self.weight_decay > 0),
                f"optim.weight_decay={self.weight_decay} must be 0 with optim.constrained=true "
                "(constrained Scion already decays: W <- (1 - lr) W - lr * radius * lmo)")


# the scalars fed to the compiled step as inputs (scaling/optim/common.py); norms and constrained are static
HYPERPARAMETERS = ("lr", "weight_decay", "alpha", *(f"radius.{r}" for r in ROLES))


class ScionState(NamedTuple):
    averaged_grad: Any


def scale_by_scion(specs: Any, norms, radius: dict, alpha, polar: Callable) -> optax.GradientTransformation:
    """direction = rho_role * unit_role(d): the step before the lr (and before the constraint's decay)."""

    def init_fn(params):
        return ScionState(jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, jnp.float32), params))

    def update_fn(grads, state, params=None):
        del params
        d = jax.tree_util.tree_map(lambda d, g: (1 - alpha) * d + alpha * g.astype(jnp.float32),
                                   state.averaged_grad, grads)
        # polar factors of the spectral leaves first: each matrix once, whole (scaling.sharding.per_matrix);
        # the other norms are row/column-separable and run on the shards
        polars = per_matrix(polar, specs, d, select=lambda s: norms.get(s.role) == "spectral")
        direction = tree_map_specs(
            lambda s, d, p: radius[s.role] * unit_direction(d, s, norms.get(s.role), lambda _, p=p: p),
            specs, d, polars)
        return direction, ScionState(d)

    return optax.GradientTransformation(init_fn, update_fn)


def build(cfg, specs, lr_mults, schedule, hp=None, polar: Callable | None = None) -> optax.GradientTransformation:
    """`polar` overrides Newton–Schulz for the spectral norm (e.g. lmo.polar_svd, the exact oracle)."""
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    radius = {r: hp[f"radius.{r}"] for r in ROLES}
    polar = polar or functools.partial(newton_schulz, steps=cfg.ns_steps, coeffs=cfg.ns_coeffs,
                                       dtype=jnp.dtype(cfg.ns_dtype), method=cfg.ns_method)
    return optax.chain(
        scale_by_scion(specs, cfg.norms, radius, hp["alpha"], polar),
        # constrained: decay 1 at the leaf's full eta, so each step is a convex combination
        *((optax.add_decayed_weights(1.0), scale_per_leaf(lr_mults)) if cfg.constrained
          else scale_and_decay(cfg, hp, specs, lr_mults)),
        apply_lr(hp["lr"], schedule),
    )

"""The optimizer zoo: every optimizer is an optax GradientTransformation built from
(optim config, param specs, per-leaf lr multipliers, schedule). See scaling/optim/common.py for
the lr and weight-decay conventions shared by all of them.

Routing reads ParamSpec.role only:
  adamw, sgd       every leaf
  lion, tiger      sign updates; the embedding role per optim.embedding_fallback (adamw | lazy | none)
  muon             Newton–Schulz on hidden matrices; AdamW on embedding, output, vector
  scion            one LMO per role from optim.norms, radius optim.radius; constrained or not
  manifold_muon    hidden matrices on the Stiefel manifold; AdamW on embedding, output, vector
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from scaling.config import ConfigError, OptimConfig
from scaling.optim import adamw, lion, manifold_muon, muon, scion
from scaling.optim.common import base_lrs
from scaling.optim.lmo import boundary_init  # the module scaling.optim.lmo holds lmo() itself
from scaling.optim.newton_schulz import newton_schulz

# name -> build(cfg, specs, lr_mults, schedule) -> optax.GradientTransformation
BUILDERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adamw": adamw.build,
    "sgd": adamw.build_sgd,
    "lion": lion.build_lion,
    "tiger": lion.build_tiger,
    "muon": muon.build,
    "scion": scion.build,
    "manifold_muon": manifold_muon.build,
}

# name -> cfg -> the roles that optimizer hands to its AdamW fallback (which runs at optim.fallback_lr)
FALLBACK_ROLES: dict[str, Callable[[OptimConfig], tuple[str, ...]]] = {
    "adamw": lambda cfg: (),
    "sgd": lambda cfg: (),
    "lion": lion.fallback_roles,
    "tiger": lion.fallback_roles,
    "muon": lambda cfg: muon.FALLBACK_ROLES,
    "scion": lambda cfg: (),
    "manifold_muon": lambda cfg: muon.FALLBACK_ROLES,
}

__all__ = ["BUILDERS", "FALLBACK_ROLES", "build_optimizer", "leaf_learning_rates", "newton_schulz", "boundary_init"]


def build_optimizer(cfg: OptimConfig, specs: Any, lr_mults: Any, schedule: Callable) -> optax.GradientTransformation:
    if cfg.name not in BUILDERS:
        raise ConfigError(f"optim.name={cfg.name!r} is not implemented (available: {', '.join(sorted(BUILDERS))})")
    return BUILDERS[cfg.name](cfg, specs, lr_mults, schedule)


def leaf_learning_rates(cfg: OptimConfig, specs: Any, lr_mults: Any, schedule_value: Any) -> Any:
    """Each leaf's effective learning rate at one step: its base lr (optim.lr, or the fallback lr on the
    roles the optimizer hands to AdamW) x the schedule's value x the parametrization's multiplier."""
    base = base_lrs(specs, cfg, FALLBACK_ROLES[cfg.name](cfg))
    return jax.tree_util.tree_map(lambda b, m: jnp.asarray(b * m * schedule_value, jnp.float32), base, lr_mults)

"""Small optax building blocks shared by every optimizer in the zoo.

Conventions (stated once, used everywhere):
- The update an optimizer returns is the final parameter delta: params + updates.
- The learning rate at step t is `lr * schedule(t) * lr_mult_leaf`, where lr_mult_leaf comes from the
  parametrization (per-role rule times the free per-role multipliers) — schedules multiply it, never
  overwrite it (notes/parametrizations.md, pitfalls).
- Weight decay is lr-coupled as in optax (shrink `lr * schedule(t) * weight_decay` per step) but uses
  the BASE lr, not the leaf's multiplied lr: this is the muP correction (lambda_leaf = lambda * m where
  the lr is divided by m), so eta*lambda stays invariant in width (mup MuAdam, decoupled_wd=False).
  It applies only to roles listed in `optim.decay_roles`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from scaling.specs import tree_map_specs


def scale_per_leaf(mults: Any) -> optax.GradientTransformation:
    """Multiply each leaf's update by a constant (a tree of Python floats matching the params)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def decay_mask(specs: Any, roles: tuple[str, ...]) -> Any:
    return tree_map_specs(lambda s: s.role in roles, specs)


def add_decay(weight_decay: float, specs: Any, roles: tuple[str, ...]) -> optax.GradientTransformation:
    """updates += weight_decay * params on the decayed roles (before the lr is applied)."""
    if weight_decay == 0:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask=decay_mask(specs, roles))


def apply_lr(lr: float, schedule: Callable) -> optax.GradientTransformation:
    """Multiply by -lr * schedule(step): the last link of every chain."""
    return optax.scale_by_schedule(lambda step: -lr * schedule(step))

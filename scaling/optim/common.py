"""Small optax building blocks shared by every optimizer in the zoo.

Conventions (stated once, used everywhere):
- The update an optimizer returns is the final parameter delta: params + updates.
- The learning rate at step t is `base_lr * schedule(t) * lr_mult_leaf`, where lr_mult_leaf comes from the
  parametrization (per-role rule times the free per-role multipliers) — schedules multiply it, never
  overwrite it. base_lr is `optim.lr`, or for leaves an optimizer
  hands to its AdamW fallback, `optim.fallback_lr` (0 -> optim.lr).
- Weight decay is lr-coupled as in optax, on the roles listed in `optim.decay_roles`, and
  `optim.wd_coupling` says to which lr:
    base (default)  shrink `base_lr * schedule(t) * weight_decay` per step: the BASE lr, not the leaf's
                    multiplied lr. This is the muP correction (lambda_leaf = lambda * m where the lr is
                    divided by m), so eta*lambda stays invariant in width (microsoft/mup MuAdam,
                    decoupled_wd=False). A leaf with lr_mult 0 still decays.
    leaf            shrink `leaf_lr * weight_decay`, leaf_lr = base_lr * schedule(t) * lr_mult_leaf: the
                    decay follows each leaf's own lr, as a per-layer-group lr scan expects (Filatov et al.
                    arXiv 2510.03871 tune each group's lr with its decay); lr_mult 0 freezes a leaf.
- Scalar hyperparameters are runtime inputs: each optimizer module lists the ones it reads in
  HYPERPARAMETERS (dotted names relative to the optim section), and its builder reads them from `hp`, a
  mapping of those names to Python floats or traced float32 scalars (scaling.hyper feeds them as inputs of
  the compiled step, so a sweep over them compiles once). Nothing branches on their values (a zero
  fallback lr selects lr with jnp.where) with one declared exception, ZERO_IS_STATIC: whether the weight
  decay is zero is part of the program (scaling.hyper), since the decay link is a pass over every
  parameter (~0.5% of the reference transformer's CPU step) that a zero decay would spend on adding
  0 * params. Everything else in the config (names, norms, booleans, step counts) is static.
- A chain is: direction (per role group, `route`) -> scale_and_decay (lr_mults and decay, in the order
  wd_coupling sets) -> apply_lr. Only manifold Muon appends one more link (a retraction, which needs the
  final step).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from scaling.specs import tree_map_specs


def get_field(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def hyper_values(cfg: Any, names: tuple[str, ...], hp: Any = None) -> dict[str, Any]:
    """hp, or (when None) the values of `names` read from the config section: a builder called without
    runtime inputs uses its config's own numbers."""
    return dict(hp) if hp is not None else {n: get_field(cfg, n) for n in names}


def is_masked(x: Any) -> bool:
    """optax.partition hands each group a tree whose other groups' leaves are MaskedNode()."""
    return isinstance(x, optax.MaskedNode)


def map_with_specs(fn: Callable[..., Any], specs: Any, tree: Any, *rest: Any) -> Any:
    """fn(spec, leaf, *rest_leaves) on every leaf of `tree` that is not masked out by optax.partition."""
    return tree_map_specs(lambda s, x, *r: x if is_masked(x) else fn(s, x, *r), specs, tree, *rest)


def route(specs: Any, group_of_role: dict[str, str], transforms: dict[str, optax.GradientTransformation]
          ) -> optax.GradientTransformation:
    """optax.partition by role: every leaf goes to transforms[group_of_role[spec.role]]."""
    labels = tree_map_specs(lambda s: group_of_role[s.role], specs)
    used = set(jax.tree_util.tree_leaves(labels))
    return optax.partition({g: t for g, t in transforms.items() if g in used}, labels)


def scale_per_leaf(mults: Any) -> optax.GradientTransformation:
    """Multiply each leaf's update by a constant (a tree of Python floats matching the params)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# Runtime inputs whose zero is static: the program config records zero / nonzero (scaling.hyper), so
# the link they drive is skipped at zero and a sweep over nonzero values still compiles once.
ZERO_IS_STATIC = ("weight_decay",)


def decay_mask(specs: Any, roles: tuple[str, ...]) -> Any:
    return tree_map_specs(lambda s: s.role in roles, specs)


def add_decay(weight_decay: Any, specs: Any, roles: tuple[str, ...], active: bool = True
              ) -> optax.GradientTransformation:
    """updates += weight_decay * params on the decayed roles (before the lr is applied). An empty role
    list drops the link; active=False (a static zero decay, ZERO_IS_STATIC) passes updates through but
    keeps the link's state, so the optimizer state has one layout whatever the decay (checkpoints of a
    run restore under any value)."""
    if not roles:
        return optax.identity()
    link = optax.add_decayed_weights(weight_decay, mask=decay_mask(specs, roles))
    if active:
        return link
    return optax.GradientTransformation(link.init, lambda updates, state, params=None: (updates, state))


def scale_and_decay(cfg, hp: dict, specs: Any, lr_mults: Any, roles: tuple[str, ...] | None = None
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Two links of a chain: the per-leaf lr multipliers and the weight decay hp["weight_decay"] (on
    `roles`, default optim.decay_roles). Decay after the multipliers couples it to the base lr, before
    them to the leaf's lr (optim.wd_coupling). Two links, not a nested chain, so the optimizer state
    keeps its layout."""
    # cfg.weight_decay is static: the run's own value, or in a compiled program 0 / 1 for zero / nonzero
    decay = add_decay(hp["weight_decay"], specs, cfg.decay_roles if roles is None else roles,
                      active=cfg.weight_decay != 0)
    if cfg.wd_coupling == "leaf":
        return decay, scale_per_leaf(lr_mults)
    return scale_per_leaf(lr_mults), decay


def fallback_lr(hp: dict) -> Any:
    """The AdamW fallback's base lr: hp["fallback_lr"], 0 meaning hp["lr"] (selected, not branched on)."""
    lr, fallback = hp["lr"], hp["fallback_lr"]
    if isinstance(lr, (int, float)) and isinstance(fallback, (int, float)):
        return lr if fallback == 0 else fallback  # Python numbers (a builder called without inputs)
    return jnp.where(fallback == 0, lr, fallback)


def base_lrs(specs: Any, hp: dict, fallback_roles: tuple[str, ...]) -> Any:
    """Per-leaf base lr: hp["lr"], or the fallback lr on roles handed to AdamW."""
    if not fallback_roles:
        return tree_map_specs(lambda s: hp["lr"], specs)
    fallback = fallback_lr(hp)
    return tree_map_specs(lambda s: fallback if s.role in fallback_roles else hp["lr"], specs)


def apply_lr(lr: float | Any, schedule: Callable) -> optax.GradientTransformation:
    """Multiply by -lr * schedule(step): the last link of every chain. `lr` is a float or a tree of
    per-leaf base lrs (see base_lrs)."""
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(lr)):  # a float or a traced scalar
        return optax.scale_by_schedule(lambda step: -lr * schedule(step))
    return optax.chain(scale_per_leaf(lr), optax.scale_by_schedule(lambda step: -schedule(step)))

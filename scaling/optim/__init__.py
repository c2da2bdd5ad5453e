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

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from scaling.config_io import ConfigError, from_dict
from scaling.optim import adamw, lion, manifold_muon, muon, scion
from scaling.optim.common import base_lrs, hyper_values
from scaling.optim.lmo import boundary_init  # the module scaling.optim.lmo holds lmo() itself
from scaling.optim.newton_schulz import newton_schulz
from scaling.optim.section import OptimConfig


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One row of the registry: its config class (the optim section when optim.name is this row's name;
    scaling.optim.section), how to build it, which scalars of its config section are runtime inputs
    of the compiled step (dotted names relative to optim), which roles it hands to its AdamW fallback
    (which runs at optim.fallback_lr), which column of the width-scaling lr rules applies to it
    (scaling.parametrization.lr_multiplier: adam, sgd, orthogonal = Adam's except on orthogonalised hidden
    matrices, lmo = none, its oracles carry the width scaling), and what it does to hidden matrices at
    init (None: nothing)."""

    config: type[OptimConfig]
    build: Callable[..., optax.GradientTransformation]  # (cfg, specs, lr_mults, schedule, hp=None)
    hyperparameters: tuple[str, ...]
    fallback_roles: Callable[[OptimConfig], tuple[str, ...]] = lambda cfg: ()
    lr_rule: str = "adam"  # adam | sgd | orthogonal | lmo
    init_hidden: Callable[[jax.Array], jax.Array] | None = None


REGISTRY: dict[str, Optimizer] = {  # the one list of optimizer names
    "adamw": Optimizer(adamw.AdamWConfig, adamw.build, adamw.HYPERPARAMETERS),
    "sgd": Optimizer(adamw.SGDConfig, adamw.build_sgd, adamw.SGD_HYPERPARAMETERS, lr_rule="sgd"),
    "lion": Optimizer(lion.LionConfig, lion.build_lion, lion.HYPERPARAMETERS, lion.fallback_roles),
    "tiger": Optimizer(lion.TigerConfig, lion.build_tiger, lion.HYPERPARAMETERS, lion.fallback_roles),
    "muon": Optimizer(muon.MuonConfig, muon.build, muon.HYPERPARAMETERS, lambda cfg: muon.FALLBACK_ROLES,
                      lr_rule="orthogonal"),
    "scion": Optimizer(scion.ScionConfig, scion.build, scion.HYPERPARAMETERS, lr_rule="lmo"),
    "manifold_muon": Optimizer(manifold_muon.ManifoldMuonConfig, manifold_muon.build, muon.HYPERPARAMETERS,
                               lambda cfg: muon.FALLBACK_ROLES, lr_rule="orthogonal",
                               init_hidden=manifold_muon.project_to_manifold),
}
BUILDERS = {name: row.build for name, row in REGISTRY.items()}

__all__ = ["BUILDERS", "REGISTRY", "Optimizer", "OptimConfig", "optim_config", "row", "build_optimizer", "hyperparameters", "leaf_learning_rates",
           "newton_schulz", "boundary_init"]


def optim_config(name: str = "adamw", **fields: Any) -> OptimConfig:
    """The optim section of optimizer `name` with `fields` set (validated like a config file's section;
    nested sections such as norms may be given as dataclasses or dicts)."""
    data = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in fields.items()}
    return from_dict(OptimConfig, {"name": name, **data}, prefix="optim.")


def _row(cfg: OptimConfig) -> Optimizer:
    if cfg.name not in REGISTRY:
        raise ConfigError(f"optim.name={cfg.name!r} is not implemented (available: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[cfg.name]


def row(cfg: OptimConfig) -> Optimizer:
    """The registry row of cfg's optimizer."""
    return _row(cfg)


def hyperparameters(cfg: OptimConfig) -> tuple[str, ...]:
    """The optimizer's runtime scalars (dotted names relative to the optim section)."""
    return _row(cfg).hyperparameters


def build_optimizer(cfg: OptimConfig, specs: Any, lr_mults: Any, schedule: Callable, hp: dict | None = None
                    ) -> optax.GradientTransformation:
    """hp: the runtime scalars (hyperparameters(cfg) -> float or traced scalar); default: cfg's own values."""
    return _row(cfg).build(cfg, specs, lr_mults, schedule, hp)


def leaf_learning_rates(cfg: OptimConfig, specs: Any, lr_mults: Any, schedule_value: Any, hp: dict | None = None
                        ) -> Any:
    """Each leaf's effective learning rate at one step: its base lr (optim.lr, or the fallback lr on the
    roles the optimizer hands to AdamW) x the schedule's value x the parametrization's multiplier."""
    row = _row(cfg)
    hp = hyper_values(cfg, row.hyperparameters, hp)
    base = base_lrs(specs, {"fallback_lr": 0.0, **hp}, row.fallback_roles(cfg))
    return jax.tree_util.tree_map(lambda b, m: jnp.asarray(b * m * schedule_value, jnp.float32), base, lr_mults)

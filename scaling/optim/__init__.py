"""The optimizer zoo: every optimizer is an optax GradientTransformation built from
(optim config, param specs, per-leaf lr multipliers, schedule). See scaling/optim/common.py for
the lr and weight-decay conventions shared by all of them."""

from __future__ import annotations

from typing import Any, Callable

import optax

from scaling.config import ConfigError, OptimConfig
from scaling.optim import adamw

# name -> build(cfg, specs, lr_mults, schedule) -> optax.GradientTransformation
BUILDERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adamw": adamw.build,
    "sgd": adamw.build_sgd,
}


def build_optimizer(cfg: OptimConfig, specs: Any, lr_mults: Any, schedule: Callable) -> optax.GradientTransformation:
    if cfg.name not in BUILDERS:
        raise ConfigError(f"optim.name={cfg.name!r} is not implemented (available: {', '.join(sorted(BUILDERS))})")
    return BUILDERS[cfg.name](cfg, specs, lr_mults, schedule)

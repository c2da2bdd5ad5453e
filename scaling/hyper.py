"""Scalar hyperparameters as runtime inputs of compiled programs, so runs that differ only in them share one.

A run config splits into a *program config* (everything that shapes the compiled train step) and the
*hyperparameter values*, {dotted field: float32 scalar}, fed to the step as inputs. Two runs with the same
program config reuse one compilation (a sweep over 20 learning rates compiles once), and the loop
(scaling.train) vmaps the same step over a stack of values to train several runs in one program.

Which scalars are inputs is declared next to each implementation, never discovered:
  optimizer         its registry row (scaling.optim.REGISTRY; HYPERPARAMETERS in its module)
  parametrization   scaling.parametrization.HYPERPARAMETERS (the free per-role lr multipliers)
  schedule          none (warmup length and decay fraction shape the program)
Every declared scalar is an input whatever its value: builders compute with them arithmetically and never
branch on one. In the program config they read as their defaults, except the inputs whose zero is static
(scaling.optim.common.ZERO_IS_STATIC, the weight decay): they read 0 or 1, so a run without decay skips
the decay link's pass over the parameters and an lr x decay sweep compiles once per side of zero. Fields only the host or the initialisation read (seeds,
logging cadence, init scales, data source) are normalised away from it: they never reach the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from scaling import optim, parametrization
from scaling.config import Config, DataConfig
from scaling.optim.common import ZERO_IS_STATIC, get_field
from scaling.schedules import SCHEDULES

# Read only on the host or at initialisation (the step never sees them).
_HOST_ONLY_RUN = dict(seed=0, data_seed=0, log_every=1, norms_every=0, eval_per_octave=1, eval_tokens=1,
                      eval_seed=0, eval_batch_size=0, checkpoint_every=0, diverge_factor=2.0)
_INIT_ONLY_PARAM = dict(init_std=0.0, embed_std=1.0, output_zero_init=False)

__all__ = ["fields", "values", "section", "program_config", "get_field", "replace_field"]


def replace_field(cfg: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: replace_field(getattr(cfg, head), rest, value)})


def _default(cfg: Config, dotted: str) -> Any:
    """The default of a field in its own section's class (optim.radius.hidden -> type(cfg.optim)().radius.hidden)."""
    head, _, rest = dotted.partition(".")
    return get_field(type(getattr(cfg, head))(), rest)


def fields(cfg: Config) -> tuple[str, ...]:
    """The dotted fields of cfg fed to the compiled step as inputs (declared by the optimizer and the
    parametrization)."""
    return (tuple(f"optim.{n}" for n in optim.hyperparameters(cfg.optim))
            + tuple(f"param.{n}" for n in parametrization.HYPERPARAMETERS))


def values(cfg: Config) -> dict[str, jnp.ndarray]:
    """The run's hyperparameter inputs: {dotted field: float32 scalar}."""
    return {f: jnp.float32(get_field(cfg, f)) for f in fields(cfg)}


def section(hp: dict[str, Any], name: str) -> dict[str, Any]:
    """The inputs of one config section, named relative to it: section(hp, "optim") -> {"lr": ..., ...}."""
    return {k.split(".", 1)[1]: v for k, v in hp.items() if k.startswith(name + ".")}


def program_config(cfg: Config) -> Config:
    """cfg with its hyperparameter inputs at their defaults and host/init-only fields reset: equal program
    configs compile to the same step."""
    for f in fields(cfg):
        static_zero = f.startswith("optim.") and f.split(".", 1)[1] in ZERO_IS_STATIC
        cfg = replace_field(cfg, f, float(get_field(cfg, f) != 0) if static_zero else _default(cfg, f))
    run = dataclasses.replace(cfg.run, **_HOST_ONLY_RUN)
    if not SCHEDULES[cfg.run.schedule]:  # only decaying schedules read the length
        run = dataclasses.replace(run, steps=1)
    param = dataclasses.replace(cfg.param, **_INIT_ONLY_PARAM)
    return dataclasses.replace(cfg, run=run, param=param, data=DataConfig(source="synthetic"))

"""Scalar hyperparameters as inputs of compiled programs, so runs that differ only in them share one.

A run config splits into a *program config* (everything that shapes the compiled train step) and a
dict of *hyperparameter values* fed to the step as float32 arrays. Two runs with the same program
config reuse one compilation (a sweep over 20 learning rates compiles once), and `scaling.batched`
vmaps the same step over a stack of values to train several runs in one program.

Which fields are inputs: HYPER_FIELDS below, when nonzero. A zero stays a Python constant in the
program config because optimizer builders branch on it (`if weight_decay == 0`, `fallback_lr or lr`,
`if b1 > 0`); zero/nonzero is therefore part of the program's identity. Fields only the host or the
initialisation read (seeds, logging cadence, init scales, data source) are normalised away from the
program config: they never reach the compiled step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from scaling.config import Config, DataConfig

_ROLES = ("embedding", "hidden", "output", "vector")
HYPER_FIELDS = (
    "optim.lr", "optim.fallback_lr", "optim.b1", "optim.b2", "optim.eps", "optim.weight_decay", "optim.momentum",
    "optim.alpha", *(f"param.lr_mult.{r}" for r in _ROLES), *(f"optim.radius.{r}" for r in _ROLES),
)
PLACEHOLDER = 0.5  # a valid nonzero value for every HYPER_FIELD; never used in arithmetic

# Read only on the host or at initialisation (the step never sees them).
_HOST_ONLY_RUN = dict(seed=0, data_seed=0, log_every=1, norms_every=0, eval_per_octave=1, eval_tokens=1,
                      eval_seed=0, eval_batch_size=0, checkpoint_every=0, diverge_factor=2.0)
_INIT_ONLY_PARAM = dict(init_std=0.0, embed_std=1.0, output_zero_init=False)


def get_field(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def replace_field(cfg: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: replace_field(getattr(cfg, head), rest, value)})


def traced_fields(cfg: Config) -> tuple[str, ...]:
    """The nonzero HYPER_FIELDS the run's optimizer reads (an unread one stays at its default)."""
    unread = {f"optim.{name}" for name in cfg.optim.unread_fields(cfg.param.kind)}
    return tuple(f for f in HYPER_FIELDS
                 if float(get_field(cfg, f)) != 0.0 and f.rsplit(".", 1)[0] not in unread and f not in unread)


def values(cfg: Config, fields: tuple[str, ...] | None = None) -> dict[str, jnp.ndarray]:
    """The run's hyperparameter inputs: {dotted field: float32 scalar}."""
    fields = traced_fields(cfg) if fields is None else fields
    return {f: jnp.float32(get_field(cfg, f)) for f in fields}


def program_config(cfg: Config, fields: tuple[str, ...] | None = None) -> Config:
    """cfg with the hyperparameter inputs `fields` (default: traced_fields(cfg)) replaced by a
    placeholder and host/init-only fields reset: equal program configs compile to the same step."""
    for f in traced_fields(cfg) if fields is None else fields:
        cfg = replace_field(cfg, f, PLACEHOLDER)
    run = dataclasses.replace(cfg.run, **_HOST_ONLY_RUN)
    if cfg.run.schedule in ("constant", "warmup"):  # only decaying schedules read the length
        run = dataclasses.replace(run, steps=1)
    param = dataclasses.replace(cfg.param, **_INIT_ONLY_PARAM)
    return dataclasses.replace(cfg, run=run, param=param, data=DataConfig(source="synthetic"))


class AttrCopy:
    """A stand-in for a frozen config section whose some fields are traced arrays.

    Frozen configs validate in __post_init__ (`lr >= 0` on a tracer would fail), so the step reads
    its hyperparameters from this lightweight copy instead: same attribute names, plus `get(name)`
    as on PerRole."""

    def __init__(self, base: Any, overrides: dict[str, Any]):
        self._base, self._overrides = base, overrides

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._base, name)

    def get(self, name: str) -> Any:
        return getattr(self, name)


def _overlay(section: Any, hp: dict[str, Any]) -> Any:
    """section with hp's dotted fields (relative to it) replaced, nested sections copied as needed."""
    direct = {k: v for k, v in hp.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in hp.items():
        if "." in k:
            head, rest = k.split(".", 1)
            nested.setdefault(head, {})[rest] = v
    direct.update({head: _overlay(getattr(section, head), sub) for head, sub in nested.items()})
    return AttrCopy(section, direct) if direct else section


def traced_sections(cfg: Config, hp: dict[str, Any]) -> tuple[Any, Any]:
    """(optim, param) sections of cfg with the fields in hp replaced by hp's (traced) values."""
    def part(name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in hp.items() if k.startswith(name + ".")}

    return _overlay(cfg.optim, part("optim")), _overlay(cfg.param, part("param"))

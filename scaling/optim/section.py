"""The optim config section, a tagged union: `optim.name` picks the optimizer's own config class.

Every class derives from `OptimConfig`, which holds what all optimizers share (the lr, weight decay and
which roles it decays, and Scion's per-role geometry, which param.kind='scion' also reads); each optimizer
module adds its own fields (levanter's OptimizerConfig choice registry is the same idea). A class's
`check` validates its own fields only; construction runs every class's check along the MRO.

Dicts and dotted keys keep one flat namespace (`optim.lr`, `optim.momentum`, ...), so configs, sweeps and
stored runs written before the split still load: `from_dict` asks `OptimConfig.variant` for the class of
the dict's name, and a key that belongs to another optimizer is accepted only at that optimizer's default
(a stored config.json spelled every field out; such a field never had an effect) and dropped; any other
value of it is refused by name, with the fields this optimizer has.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from scaling.config_io import ConfigError, coerce, require
from scaling.optim.lmo import PerRoleNorm
from scaling.specs import ROLES, PerRole

WD_COUPLINGS = ("base", "leaf")  # see scaling.optim.common


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0  # lr-coupled (optax semantics); to which lr: wd_coupling
    decay_roles: tuple[str, ...] = ("embedding", "hidden", "output")  # vectors are not decayed by default
    wd_coupling: str = "base"  # base: shrink lr*schedule*wd (muP's width invariance); leaf: lr_leaf*wd
    # Scion's per-role norms and radii (scaling.optim.lmo): read by the Scion optimizer, and by
    # param.kind='scion' (its boundary init) whatever the optimizer; scaling.config refuses them elsewhere.
    norms: PerRoleNorm = PerRoleNorm()
    radius: PerRole = PerRole()

    def __post_init__(self):
        from scaling.optim import REGISTRY  # the name -> class table (scaling.optim imports this module)

        require(self.name in REGISTRY, f"optim.name={self.name!r} is not one of {', '.join(REGISTRY)}")
        require(type(self) is REGISTRY[self.name].config,
                f"optim.name={self.name!r} needs its own config class {REGISTRY[self.name].config.__name__}, "
                f"not {type(self).__name__} (build it with scaling.optim.optim_config or from a dict)")
        for klass in reversed(type(self).__mro__):
            if "check" in klass.__dict__:
                klass.__dict__["check"](self)

    def check(self) -> None:
        require(self.lr >= 0, f"optim.lr={self.lr} must be >= 0")
        require(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        for r in self.decay_roles:
            require(r in ROLES, f"optim.decay_roles contains unknown role {r!r} (roles: {', '.join(ROLES)})")
        require(self.wd_coupling in WD_COUPLINGS,
                f"optim.wd_coupling={self.wd_coupling!r} must be one of {', '.join(WD_COUPLINGS)}")
        self.norms.check("optim.norms")
        for r in ROLES:
            require(self.radius.get(r) > 0, f"optim.radius.{r}={self.radius.get(r)} must be positive")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def variant(cls, data: dict, prefix: str = "optim.") -> tuple[type, dict]:
        """(the config class of data's optim.name, data without other optimizers' default-valued fields)."""
        from scaling.optim import REGISTRY

        name = data.get("name", OptimConfig.name)
        if not isinstance(name, str) or name not in REGISTRY:
            raise ConfigError(f"{prefix}name={name!r} is not one of {', '.join(REGISTRY)}")
        chosen = REGISTRY[name].config
        own = set(chosen.fields())
        kept = {}
        for key, value in data.items():
            if key in own:
                kept[key] = value
                continue
            owned = _field_defaults().get(key)
            if owned is None:
                kept[key] = value  # an unknown key: from_dict names it
                continue
            if any(_is_default(value, hint, default, prefix + key) for hint, default in owned):
                continue  # another optimizer's field left at its default: it never had an effect
            raise ConfigError(f"{prefix}{key}={value!r} has no effect with {prefix}name={name!r} (its fields: "
                              f"{', '.join(sorted(own - {'name'}))}); leave it at its default")
        return chosen, kept


@functools.cache
def _field_defaults() -> dict[str, list[tuple[Any, Any]]]:
    """{field: [(type hint, default) of each optimizer class that has it]}, read once from the registry
    (every config parse consults it, and type hints are slow to resolve)."""
    from scaling.optim import REGISTRY

    table: dict[str, list[tuple[Any, Any]]] = {}
    for row in REGISTRY.values():
        hints = typing.get_type_hints(row.config)
        for f in dataclasses.fields(row.config):
            table.setdefault(f.name, []).append((hints[f.name], f.default))
    return table


def _is_default(value: Any, hint: Any, default: Any, key: str) -> bool:
    try:
        return coerce(value, hint, key) == default
    except ConfigError:
        return False


__all__ = ["OptimConfig", "WD_COUPLINGS"]

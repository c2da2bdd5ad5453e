"""Config (de)serialisation: nested plain dicts (JSON, YAML, dotted `key=value` overrides) <-> frozen
dataclasses, with errors that name the dotted field.

    to_dict(cfg) -> dict                  dataclasses.asdict, JSON-safe (tuples become lists)
    from_dict(cls, data) -> cls           coerces each value to its field's annotated type; an unknown key is
                                          refused by its dotted name; a tagged union (a class with a
                                          `variant` classmethod, e.g. the optim section chosen by
                                          optim.name) is resolved to its concrete class first
    apply_overrides(data, ["a.b=1"])      sets dotted keys (values parsed as JSON, else kept as strings)
    load_file(path) -> dict               a .json or .yaml/.yml file holding a mapping
It knows nothing of the run config's sections (scaling.config builds on it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Invalid user input; the message names the field or file. The CLI exits with status 2."""


def require(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless cond: the one form every config check takes."""
    if not cond:
        raise ConfigError(msg)

def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists), JSON-serialisable."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def coerce(value: Any, tp: Any, field: str) -> Any:
    """Coerce a JSON/YAML/CLI value to the annotated type, or raise ConfigError naming the field."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{field} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=field + ".")
    if origin is tuple:
        (elem,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field} must be a list, got {value!r}")
        return tuple(coerce(v, elem, f"{field}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], field)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{field} must be a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{field} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"{field} must be an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(f"{field} must be an integer, got {value!r}")
    if tp is float:
        return _finite_float(value, field)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{field} must be a string, got {value!r}")
    return value


def _finite_float(value: Any, field: str) -> float:
    """A float field's value. Infinity and NaN are refused here, once for every float field: no
    hyperparameter means anything at inf or nan (a run would only diverge), and a non-finite value has no
    JSON form, so no run identity either."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{field} must be a number, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{field} must be a number, got {value!r}") from None
    require(math.isfinite(number), f"{field}={number} must be a finite number")
    return number


@functools.cache
def _fields_of(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A config class's resolved field types and names (resolving the hints is most of a parse's time)."""
    return typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, rejecting unknown keys by dotted name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping")
    if hasattr(cls, "variant"):  # a tagged union: the tag picks the class, which may drop keys it tolerates
        cls, data = cls.variant(data, prefix)
    hints, names = _fields_of(cls)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - from_dict passes only known names
        raise ConfigError(f"{prefix}: {e}") from e


def apply_overrides(data: dict, overrides: list[str] | dict) -> dict:
    """Set dotted keys ("optim.lr=1e-3" or {"optim.lr": 1e-3}) in a nested dict (copied)."""
    out = json.loads(json.dumps(data))
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)  # numbers, booleans, lists; fall back to the raw string
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def load_file(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} is unreadable: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {e.start}): not a JSON or YAML "
                          "config") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"config file {str(p)!r} does not parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data

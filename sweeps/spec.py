"""The sweep language: axes over dotted config keys, combined with product, zip, chain and subsample.

A `Sweep` is an ordered, finite list of points; a point is a dict {dotted key: value}. Expressions are
plain Python evaluated when an experiment file is imported (never eval'd from strings):

    sweep = product(axis("model.width", [64, 128]),
                    axis("optim.lr", log2_grid(3e-3, -2, 2)),        # 3e-3 * 2^(-2 .. 2 step 1/2)
                    derived("run.steps", lambda p: p["tokens"] // (p["run.batch_size"] * p["model.context"])))

Order is deterministic: in a product the last factor varies fastest, a zip pairs points by position,
a chain concatenates, a subsample keeps a seeded subset in its original order.

Keys: a dotted key ("optim.lr") sets a config field; a key without a dot ("tokens") is a free
variable: it is a coordinate of the point (it shows in the run id and is passed to derived values) but
it is not a config field. `derived(key, fn)` computes a value from the whole point (base config,
defaults and coordinates) after everything else; derived values are not coordinates.

Spec errors (an empty axis, a zip of unequal lengths, a key set twice in one point) raise ConfigError
naming the key; unknown config keys are caught when the experiment is expanded (sweeps.experiment).
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import math
import random
from typing import Any, Callable, Iterable, Iterator, Mapping

from scaling.api import ConfigError

__all__ = ["Sweep", "Derived", "axis", "product", "zip", "chain", "subsample", "derived", "log2_grid",
           "steps_for_tokens"]


@dataclasses.dataclass(frozen=True)
class Derived:
    """A value computed from the resolved point: fn(point) where point maps every dotted key (defaults,
    base, coordinates) and every free variable to its value."""

    fn: Callable[[Mapping[str, Any]], Any]
    name: str = ""


@dataclasses.dataclass(frozen=True)
class Sweep:
    points: tuple[dict, ...]
    axes: tuple[str, ...]  # coordinate keys (derived keys excluded), in declaration order

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.points)

    def __repr__(self) -> str:
        return f"Sweep({len(self.points)} points over {', '.join(self.axes) or 'no axes'})"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise ConfigError(f"sweep key {key!r} must be a dotted config key like 'optim.lr' or a plain name")
    return key


def _check_value(key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"sweep axis {key}: value {value!r} is not finite")
    if isinstance(value, (list, tuple)):
        return tuple(_check_value(key, v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, Derived)):
        return value
    raise ConfigError(f"sweep axis {key}: value {value!r} of type {type(value).__name__} is not a "
                      "number, string, boolean or list")


def axis(key: str, values: Iterable[Any]) -> Sweep:
    """One key taking each of `values` in turn."""
    key = _check_key(key)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"sweep axis {key}: values must be a list, got {values!r}")
    values = [_check_value(key, v) for v in values]
    if not values:
        raise ConfigError(f"sweep axis {key} is empty")
    return Sweep(tuple({key: v} for v in values), (key,))


def derived(key: str, fn: Callable[[Mapping[str, Any]], Any]) -> Sweep:
    """A one-point sweep setting `key` to fn(point); combine it with product to attach it to every point."""
    key = _check_key(key)
    if not callable(fn):
        raise ConfigError(f"derived {key}: {fn!r} is not callable")
    return Sweep(({key: Derived(fn, key)},), ())


def _merge(a: dict, b: dict, how: str) -> dict:
    both = set(a) & set(b)
    if both:
        raise ConfigError(f"sweep key {sorted(both)[0]} is set twice in one point (by a {how})")
    return {**a, **b}


def _axes(*sweeps: Sweep) -> tuple[str, ...]:
    out: list[str] = []
    for s in sweeps:
        out += [k for k in s.axes if k not in out]
    return tuple(out)


def _sweeps(args: tuple, how: str) -> tuple[Sweep, ...]:
    for s in args:
        if not isinstance(s, Sweep):
            raise ConfigError(f"{how}() takes sweeps (axis(...), product(...), ...), got {s!r}")
    if not args:
        raise ConfigError(f"{how}() of nothing")
    return args


def _combine(combos: Iterable[tuple[dict, ...]], sweeps: tuple[Sweep, ...], op: str) -> Sweep:
    """One point per combination of the sweeps' points, merged (a key set twice is an error)."""
    points = []
    for combo in combos:
        p: dict = {}
        for q in combo:
            p = _merge(p, q, op)
        points.append(p)
    return Sweep(tuple(points), _axes(*sweeps))


def product(*sweeps: Sweep) -> Sweep:
    """Every combination; the last sweep varies fastest."""
    sweeps = _sweeps(sweeps, "product")
    return _combine(itertools.product(*(s.points for s in sweeps)), sweeps, "product")


def zip(*sweeps: Sweep) -> Sweep:  # noqa: A001 - the sweep language's name for it
    """Points paired by position; every sweep must have the same length."""
    sweeps = _sweeps(sweeps, "zip")
    lengths = [len(s) for s in sweeps]
    if len(set(lengths)) > 1:
        desc = ", ".join(f"{'+'.join(s.axes) or 'derived'} has {n}" for s, n in builtins.zip(sweeps, lengths))
        raise ConfigError(f"zip of unequal lengths: {desc}")
    return _combine(builtins.zip(*(s.points for s in sweeps)), sweeps, "zip")


def chain(*sweeps: Sweep) -> Sweep:
    """The points of each sweep, one sweep after another."""
    sweeps = _sweeps(sweeps, "chain")
    return Sweep(tuple(p for s in sweeps for p in s.points), _axes(*sweeps))


def subsample(sweep: Sweep, n: int, seed: int = 0) -> Sweep:
    """n points drawn without replacement with a fixed seed, kept in their original order."""
    _sweeps((sweep,), "subsample")
    if not isinstance(n, int) or n <= 0:
        raise ConfigError(f"subsample n={n!r} must be a positive integer")
    if n >= len(sweep):
        return sweep
    keep = sorted(random.Random(seed).sample(range(len(sweep)), n))
    return Sweep(tuple(sweep.points[i] for i in keep), sweep.axes)


def log2_grid(center: float, lo: float, hi: float, step: float = 0.5) -> list[float]:
    """center * 2^e for e = lo, lo + step, ..., hi (e.g. a learning-rate grid in powers of 2^0.5).
    Values are rounded to 6 significant digits so run ids do not depend on the last bit of pow()."""
    if center <= 0 or step <= 0 or hi < lo:
        raise ConfigError(f"log2_grid(center={center}, lo={lo}, hi={hi}, step={step}) needs center > 0, "
                          "step > 0 and lo <= hi")
    n = int(round((hi - lo) / step))
    return [float(f"{center * 2 ** (lo + i * step):.6g}") for i in range(n + 1)]


def steps_for_tokens(tokens_key: str = "tokens") -> Callable[[Mapping[str, Any]], int]:
    """A derived-value function: steps = round(tokens / (run.batch_size * model.context)), at least 1.
    Use as derived("run.steps", steps_for_tokens()) with an axis or BASE entry named `tokens_key`."""

    def steps(point: Mapping[str, Any]) -> int:
        return max(1, round(point[tokens_key] / (point["run.batch_size"] * point["model.context"])))

    return steps

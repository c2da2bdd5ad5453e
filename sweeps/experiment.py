"""Experiment files and their expansion into run specs.

An experiment is one small Python file, imported with importlib (never eval'd), that declares:

    BASE = {"model.kind": "mlp", "data.source": "shakespeare", ...}   # dotted keys (or nested dict / Config)
    SWEEP = product(axis("model.width", [64, 128]), axis("optim.lr", log2_grid(3e-3, -2, 2)))
    ANALYSIS = {"recipe": "lr_transfer", ...}   # optional: read by `scaling analyze`
    BATCH = "auto"                               # optional: "auto" | "on" | "off" (sweeps.worker: batches)

`expand(experiment)` resolves every point to a validated `Config` and its run id (sweeps.run_id: the
coordinates and the identity digest, scaling.identity); points with the same identity are one run.
Expansion is deterministic and writes nothing; any spec error is a ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from scaling.api import Config, ConfigError, defaults, digest, flatten, from_dict, to_dict
from sweeps import run_id as rid
from sweeps.spec import Derived, Sweep

EXPERIMENTS_DIR = Path(__file__).parent / "experiments"
BATCH_MODES = ("auto", "on", "off")  # auto: batch on accelerators, not on CPU


@dataclasses.dataclass(frozen=True)
class RunSpec:
    id: str  # "<coords>-<sha8>"
    digest: str  # scaling.identity.digest(config): sha256 of the versioned identity
    coords: dict  # the point's axis values (free variables included)
    config: Config


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    sweep: Sweep
    base: dict  # dotted key -> value
    analysis: dict | None = None
    batch: str = "auto"
    source: str | None = None  # the file it was loaded from


def unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(v) if isinstance(v, tuple) else v
    return out


DEFAULTS = defaults()  # every dotted key a config can have (each optimizer's own fields included)


def check_key(key: str, where: str) -> None:
    """Dotted keys must name a config field; keys without a dot are free variables."""
    if "." not in key or key in DEFAULTS:
        return
    close = difflib.get_close_matches(key, DEFAULTS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown config key {key} in {where}{hint}")


# ---------------------------------------------------------------- loading


def resolve_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".py") or "/" in text or path.exists():
        if not path.is_file():
            raise ConfigError(f"experiment file {text!r} does not exist")
        return path.resolve()
    candidate = EXPERIMENTS_DIR / f"{text}.py"
    if not candidate.is_file():
        known = ", ".join(list_experiments()) or "none"
        raise ConfigError(f"experiment {text!r} is neither a .py file nor one of sweeps/experiments ({known})")
    return candidate


def list_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.name.startswith("_"))


def load_module(name_or_path: str | Path) -> ModuleType:
    path = resolve_path(name_or_path)
    module_name = f"sweeps_experiment_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"experiment file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from e
    except SyntaxError as e:  # file:line first, as Python reports it (the line is the file's, not importlib's)
        raise ConfigError(f"{e.filename or path}:{e.lineno}: {type(e).__name__}: {e.msg} "
                          "(experiment file does not parse)") from None
    except Exception as e:  # noqa: BLE001 - any failure is the experiment file's
        raise ConfigError(f"{path}:{_line_in(path, e)}: {type(e).__name__}: {e} "
                          "(experiment file failed to import)") from e
    except (SystemExit, KeyboardInterrupt) as e:  # not the command's own exit: the file stopped its import
        stopped = "exited" if isinstance(e, SystemExit) else "was interrupted"
        raise ConfigError(f"experiment {path} {stopped} at import ({type(e).__name__}{_code(e)} at line "
                          f"{_line_in(path, e)}): an experiment file only declares BASE, SWEEP and ANALYSIS") from None
    sys.modules.setdefault(module_name, module)
    return module


def _line_in(path: Path, e: BaseException) -> int | str:
    """The line of the experiment file the exception passed through last (the traceback's last frame may
    be in code it called)."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    return lines[-1] if lines else "?"


def _code(e: BaseException) -> str:
    return f"({e.code!r})" if isinstance(e, SystemExit) else ""


def load_experiment(name_or_path: str | Path) -> Experiment:
    module = load_module(name_or_path)
    path = Path(module.__file__)
    sweep = getattr(module, "SWEEP", None)
    if not isinstance(sweep, Sweep):
        raise ConfigError(f"experiment {path.name} must define SWEEP = product(axis(...), ...) (a Sweep)")
    base = getattr(module, "BASE", {})
    if isinstance(base, Config):
        base = flatten(to_dict(base))
    elif isinstance(base, Mapping):
        base = flatten(base)
    else:
        raise ConfigError(f"experiment {path.name}: BASE must be a dict of dotted keys or a Config")
    analysis = getattr(module, "ANALYSIS", None)
    if analysis is not None and not isinstance(analysis, Mapping):
        raise ConfigError(f"experiment {path.name}: ANALYSIS must be a dict like {{'recipe': 'lr_transfer'}}")
    batch = getattr(module, "BATCH", "auto")
    batch = {True: "on", False: "off"}.get(batch, batch)
    if batch not in BATCH_MODES:
        raise ConfigError(f"experiment {path.name}: BATCH={batch!r} must be one of {', '.join(BATCH_MODES)}")
    name = getattr(module, "NAME", path.stem)
    return Experiment(name=name, sweep=sweep, base=dict(base), analysis=dict(analysis) if analysis else None,
                      batch=batch, source=str(path))


# ---------------------------------------------------------------- expansion


class _PointView(Mapping):
    """What a derived value sees: defaults, base, coordinates and already-derived values."""

    def __init__(self, values: dict):
        self._values = values

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            raise KeyError(f"{key} (neither a config key nor a coordinate of this point)")
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def resolve_point(point: dict, base: dict, axes: tuple[str, ...]) -> tuple[dict, Config]:
    """(coordinates, validated Config) of one sweep point."""
    for key in point:
        check_key(key, "the sweep")
    values = {**DEFAULTS, **base, **{k: v for k, v in point.items() if not isinstance(v, Derived)}}
    coords = {k: point[k] for k in axes if k in point and not isinstance(point[k], Derived)}
    for key, v in point.items():
        if isinstance(v, Derived):
            try:
                values[key] = v.fn(_PointView(values))
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - the experiment's function failed
                raise ConfigError(f"derived {key} at {coords}: {type(e).__name__}: {e}") from e
    try:
        cfg = from_dict(Config, unflatten({k: v for k, v in values.items() if "." in k}))
    except ConfigError as e:
        raise ConfigError(f"{e} (at sweep point {coords})") from e
    return coords, cfg


def expand(experiment: Experiment) -> list[RunSpec]:
    """Every distinct run of the experiment, in sweep order (a repeated config keeps its first point)."""
    for key in experiment.base:
        check_key(key, "BASE")
    for key in experiment.sweep.axes:
        check_key(key, "a sweep axis")
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for point in experiment.sweep.points:
        coords, cfg = resolve_point(point, experiment.base, experiment.sweep.axes)
        key = digest(cfg)
        if key in seen:
            continue
        seen.add(key)
        runs.append(RunSpec(rid.run_id(coords, key), key, coords, cfg))
    return runs

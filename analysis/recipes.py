"""Analysis recipes: RECIPES maps a name to fn(runs, curves, out_dir, **options) -> dict.

The dict is JSON-serialisable after `analysis.fit.jsonable` (DataFrames become lists of records) and
carries "summary" (rows for the terminal table), "warnings" (plain sentences) and "figures" (PNG
names written to out_dir). `resolve_experiment` accepts a recipe name, or a Python file/module that
defines ANALYSIS = {"recipe": "<name>", **options} (imported with importlib, never eval'd), or the
name of an experiment whose ANALYSIS the sweep runner recorded in <store>/_experiments/<name>.json.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Callable

from analysis.errors import AnalysisError
from analysis.recipes_compute import chinchilla, critical_batch, isoflop
from analysis.recipes_lr import lr_transfer
from analysis.recipes_norm import norm_transfer
from analysis.recipes_optim import optimizer_comparison
from analysis.recipes_predict import norm_guided_lr, role_lr
from analysis.recipes_training import curve_collapse, schedule_law, shared_exponent_speedup, wd_timescale

RECIPES: dict[str, Callable[..., dict]] = {
    "lr_transfer": lr_transfer,
    "norm_transfer": norm_transfer,
    "norm_guided_lr": norm_guided_lr,
    "role_lr": role_lr,
    "chinchilla": chinchilla,
    "isoflop": isoflop,
    "critical_batch": critical_batch,
    "optimizer_comparison": optimizer_comparison,
    "wd_timescale": wd_timescale,
    "schedule_law": schedule_law,
    "shared_exponent_speedup": shared_exponent_speedup,
    "curve_collapse": curve_collapse,
}


def _load_module(experiment: str):
    path = Path(experiment)
    if path.suffix == ".py":
        if not path.is_file():
            raise AnalysisError(f"experiment file {experiment!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"_experiment_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - any error in the user's file is reported by name
            raise AnalysisError(f"experiment file {experiment!r} failed to import: {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(experiment)
    except ImportError as e:
        known = ", ".join(sorted(RECIPES))
        raise AnalysisError(f"experiment {experiment!r} is neither a recipe ({known}) nor an importable "
                            f"module or .py file ({e})") from e


def _from_store_manifest(experiment: str, stores) -> tuple[bool, dict | None]:
    """(found, ANALYSIS) from the sweep runner's <store>/_experiments/<name>.json."""
    for store in stores:
        path = Path(store) / "_experiments" / f"{experiment}.json"
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise AnalysisError(f"experiment manifest {str(path)!r} is unreadable: {e}") from e
            return True, manifest.get("analysis") if isinstance(manifest, dict) else None
    return False, None


def resolve_experiment(experiment: str, stores=()) -> tuple[str, dict]:
    """(recipe name, options) from a recipe name, an experiment file/module defining ANALYSIS, or the
    name of an experiment recorded in one of the stores (<store>/_experiments/<name>.json)."""
    if experiment in RECIPES:
        return experiment, {}
    found, spec = (False, None) if experiment.endswith(".py") else _from_store_manifest(experiment, stores)
    if not found:
        spec = getattr(_load_module(experiment), "ANALYSIS", None)
    if not isinstance(spec, dict) or "recipe" not in spec:
        raise AnalysisError(f"experiment {experiment!r} defines no ANALYSIS = {{'recipe': ..., ...}} dict")
    options = dict(spec)
    name = options.pop("recipe")
    if name not in RECIPES:
        raise AnalysisError(f"experiment {experiment!r}: ANALYSIS recipe {name!r} is not one of "
                            f"{', '.join(sorted(RECIPES))}")
    return name, options


def run_recipe(name: str, runs, curves, out_dir=None, **options) -> dict:
    if name not in RECIPES:
        raise AnalysisError(f"unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})")
    try:
        return RECIPES[name](runs, curves, out_dir, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e) or "required keyword-only argument" in str(e):
            raise AnalysisError(f"recipe {name!r}: {e}") from e
        raise

"""The run contract: everything a driver of runs (sweeps, or any other orchestrator) uses from `scaling`.

Drivers import from this module only, never from `scaling`'s internal modules, so the training loop,
the batched trainer and the config can be reorganised without touching them. tests/test_layering.py
enforces it for `sweeps`.

Configs      Config, ConfigError, from_dict, to_dict, load_config
Identity     IDENTITY_SCHEMA, identity(cfg), digest(cfg), check_same_run(config_json, cfg),
             upgrade(config_dict, schema) (scaling.identity: versioned run identity and its migrations)
Run files    read_jsonl, write_json_atomic (config.json, metrics.jsonl, summary.json of a run directory)
Training     train(cfg, out_dir, ...), logged_steps(run_config) (the steps metrics.jsonl holds)
Batched      batch_key(cfg) (runs with equal keys train together), train_batched(cfgs, out_dirs, ...),
             MembersOutOfStep

The training names are resolved when first accessed (PEP 562), so importing this module does not import
the training loop (a sweep's driver process never trains), and each access reads the current attribute of
scaling.train / scaling.batched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scaling.config import Config, ConfigError, from_dict, load_config, to_dict
from scaling.identity import IDENTITY_SCHEMA, check_same_run, digest, identity, upgrade
from scaling.logs import read_jsonl, write_json_atomic

if TYPE_CHECKING:
    from scaling.batched import MembersOutOfStep, batch_key, train_batched
    from scaling.train import logged_steps, train

_LAZY = {
    "train": "scaling.train",
    "logged_steps": "scaling.train",
    "batch_key": "scaling.batched",
    "train_batched": "scaling.batched",
    "MembersOutOfStep": "scaling.batched",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["Config", "ConfigError", "from_dict", "to_dict", "load_config", "read_jsonl", "write_json_atomic",
           "IDENTITY_SCHEMA", "identity", "digest", "check_same_run", "upgrade",
           "train", "logged_steps", "batch_key", "train_batched", "MembersOutOfStep"]

"""The run contract: everything a driver of runs (sweeps, or any other orchestrator) uses from `scaling`.

Drivers import from this module only, never from `scaling`'s internal modules, so the training loop,
the batched trainer and the config can be reorganised without touching them. tests/test_layering.py
enforces it for `sweeps`.

Configs      Config, ConfigError, from_dict, to_dict, load_config
Identity     IDENTITY_SCHEMA, identity(cfg), digest(cfg), check_same_run(config_json, cfg),
             upgrade(config_dict, schema) (scaling.identity: versioned run identity and its migrations),
             defaults() (every dotted config key, of every optimizer's section, with its default)
Run files    read_jsonl, write_json_atomic (config.json, metrics.jsonl, summary.json of a run directory),
             FINAL_STATES (the summary statuses of a finished run)
Training     train(cfg, out_dir, ...); train_runs(cfgs, out_dirs, ...) for K >= 1 runs with one
             batch_key(cfg) (runs with equal keys train together), MembersOutOfStep; its may_write(i) is
             asked before every write of run i's files (a driver's fencing check; False: OwnershipLost);
             logged_steps(run_config) (the steps metrics.jsonl holds)

The training names are resolved when first accessed (PEP 562), so importing this module does not import
the training loop (a sweep's driver process never trains), and each access reads the current attribute of
scaling.train.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scaling.config import Config, ConfigError, from_dict, load_config, to_dict
from scaling.identity import IDENTITY_SCHEMA, check_same_run, defaults, digest, flatten, identity, upgrade
from scaling.logs import FINAL_STATES, read_jsonl, write_json_atomic

if TYPE_CHECKING:
    from scaling.train import MembersOutOfStep, OwnershipLost, batch_key, logged_steps, train, train_runs

_LAZY = {name: "scaling.train" for name in ("train", "train_runs", "logged_steps", "batch_key", "MembersOutOfStep",
                                             "OwnershipLost")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["Config", "ConfigError", "from_dict", "to_dict", "load_config", "read_jsonl", "write_json_atomic", "FINAL_STATES",
           "IDENTITY_SCHEMA", "identity", "digest", "defaults", "check_same_run", "upgrade", "flatten",
           "train", "train_runs", "logged_steps", "batch_key", "MembersOutOfStep", "OwnershipLost"]

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
             logged_steps(run_config) (the steps metrics.jsonl holds); tracking=[Tracking | None per run]
             mirrors each run's metrics to W&B / TensorBoard (scaling.trackers; not part of the run)
Trackers     Tracking(kinds, project, dir, run_id, tags, context), parse_trackers("wandb,tensorboard"),
             check_trackers(kinds) (ConfigError when a tracker's package is missing)
Multi-host   Processes (one process's place in a jax.distributed job), distributed_processes(coordinator,
             num_processes, process_id, local_device_ids), initialize_distributed(processes, timeout_s)
             (scaling.distributed: call it in every process before training; a no-op for one process)

The training names, and the names that need the config classes (Config, load_config, the identity
functions: they import the models, so JAX), are resolved when first accessed (PEP 562). Importing this
module imports neither JAX nor the training loop: a sweep's driver process never trains, and reading a
store (`scaling sweep status`) needs only the light names (ConfigError, from_dict, the run files,
IDENTITY_SCHEMA). Each access reads the current attribute of its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scaling.config_io import ConfigError, from_dict, to_dict
from scaling.distributed import Processes
from scaling.distributed import from_arguments as distributed_processes
from scaling.distributed import initialize as initialize_distributed
from scaling.identity_schema import IDENTITY_SCHEMA
from scaling.logs import FINAL_STATES, read_jsonl, write_json_atomic
from scaling.trackers import Tracking
from scaling.trackers import check_available as check_trackers
from scaling.trackers import parse_kinds as parse_trackers

if TYPE_CHECKING:
    from scaling.config import Config, load_config
    from scaling.identity import check_same_run, defaults, digest, flatten, identity, upgrade
    from scaling.train import MembersOutOfStep, OwnershipLost, batch_key, logged_steps, train, train_runs

TRAINING = ("train", "train_runs", "logged_steps", "batch_key", "MembersOutOfStep", "OwnershipLost")
_LAZY = {**{name: "scaling.train" for name in TRAINING}, "Config": "scaling.config", "load_config": "scaling.config",
         **{name: "scaling.identity" for name in ("check_same_run", "defaults", "digest", "flatten", "identity",
                                                  "upgrade")}}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["Config", "ConfigError", "from_dict", "to_dict", "load_config", "read_jsonl", "write_json_atomic", "FINAL_STATES",
           "IDENTITY_SCHEMA", "identity", "digest", "defaults", "check_same_run", "upgrade", "flatten",
           "train", "train_runs", "logged_steps", "batch_key", "MembersOutOfStep", "OwnershipLost",
           "Tracking", "parse_trackers", "check_trackers",
           "Processes", "distributed_processes", "initialize_distributed"]

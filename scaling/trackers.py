"""Tracker mirrors of metrics.jsonl: Weights & Biases and TensorBoard, optional extras.

metrics.jsonl stays the record of a run (analysis, integrity checks and resume read only it); a tracker gets
a copy of every row as it is appended (`TrackedLog`, the run's MetricsLog), under namespaced keys
(`tracker_key`: train/loss, eval/loss, eval/bpb, optim/lr, norms/<layer>/param, ...), at the row's step.

Which trackers a run gets is not part of the run (`Tracking`, outside Config): an observer changes no
result, so choosing one never changes a run id, and a run resumed with another choice is the same run.
Entry points: `scaling train --track wandb,tensorboard`, `scaling sweep run --track ...` (stored in the
experiment's manifest, so every worker of every executor sees it), and `train_runs(..., tracking=[...])`.

Resume: one tracker run per run id. W&B resumes the run of that id (`resume="allow"`; offline,
`WANDB_MODE=offline`, each session is a directory that `wandb sync` joins into that run). TensorBoard is
reopened with `purge_step` = the resumed step + 1, so events a killed process wrote after its last
checkpoint are discarded (they are logged again, identically, by the resumed run). Rows up to the
checkpoint are never sent again: the tracker sees only rows appended after `restart_at`.

A tracker that fails while a run trains warns once and is dropped: the run goes on, its metrics.jsonl
is complete. A tracker whose package is not installed is a ConfigError (`check_available`) before training.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from scaling.config_io import ConfigError
from scaling.logs import MetricsLog

# tracker name -> (importable module that provides it, the pip extra that installs it)
KINDS = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboardX", "tensorboard")}


@dataclasses.dataclass(frozen=True)
class Tracking:
    """Which trackers mirror a run, and what they are told about it (not part of the run's identity).

    kinds:   names from KINDS, e.g. ("wandb", "tensorboard"); empty: no tracker, no overhead
    project: the W&B project
    dir:     where tracker files go (default: the run directory; W&B honours WANDB_DIR when this is unset)
    run_id:  the tracker run's id and name (default: the run directory's name, a sweep's run id)
    tags:    tracker tags (a sweep: its name and coordinates)
    context: extra tracker config next to the run's config (a sweep: name, coordinates, run id)
    """

    kinds: tuple[str, ...] = ()
    project: str = "scaling"
    dir: str | None = None
    run_id: str | None = None
    tags: tuple[str, ...] = ()
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"tracker {unknown[0]!r} is not one of {', '.join(KINDS)}")


def parse_kinds(text: str | None, option: str = "--track") -> tuple[str, ...]:
    """'wandb,tensorboard' -> ("wandb", "tensorboard"); '' / 'none' / None -> (). Unknown names: ConfigError."""
    if not text or text.strip().lower() == "none":
        return ()
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"{option}={text!r}: {k!r} is not a tracker (choose from {', '.join(KINDS)})")
    return kinds


def check_available(kinds: tuple[str, ...], option: str = "--track") -> None:
    """ConfigError naming the option and the extra to install when a tracker's package is missing."""
    for k in kinds:
        module, extra = KINDS[k]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{option} {k}: the {module} package is not installed "
                              f"(pip install 'scaling[{extra}]')")


def tracker_key(key: str) -> str | None:
    """The tracker name of a metrics.jsonl key; None for the step itself (the tracker's x axis).

    train_<x> -> train/<x>, val_<x> -> eval/<x> (val_loss -> eval/loss, val_bpb -> eval/bpb), tokens ->
    train/tokens, lr and grad_norm -> optim/<key>; norms (scaling.norm_log): opnorm/<kind>/<path>[/<layer>]
    -> norms/<path>[/<layer>]/<kind>, norm/<kind>/<role> -> norms/by_role/<role>/<kind>, rms/<kind>/<role>
    -> norms/by_role/<role>/rms_<kind>. Any other key is passed as it is (nothing is dropped)."""
    if key == "step":
        return None
    if key == "tokens":
        return "train/tokens"
    if key in ("lr", "grad_norm"):
        return f"optim/{key}"
    for prefix, space in (("train_", "train"), ("val_", "eval")):
        if key.startswith(prefix) and "/" not in key:
            return f"{space}/{key[len(prefix):]}"
    head, _, rest = key.partition("/")
    kind, _, tail = rest.partition("/")
    if tail and head == "opnorm":
        return f"norms/{tail}/{kind}"
    if tail and head == "norm":
        return f"norms/by_role/{tail}/{kind}"
    if tail and head == "rms":
        return f"norms/by_role/{tail}/rms_{kind}"
    return key


def tracker_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics row as {tracker key: float}: numbers only (a non-finite value stays a float)."""
    out = {}
    for k, v in row.items():
        name = tracker_key(k)
        if name is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    return out


class Tracker(Protocol):
    def log(self, step: int, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def _tags(tags: tuple[str, ...]) -> list[str]:
    return [t[:64] for t in tags]  # W&B refuses tags over 64 characters


class WandbTracker:
    """One W&B run per run id, resumed with it. WANDB_MODE (offline, disabled) and WANDB_DIR are honoured.
    run.finish() returns before W&B's service has written everything (wandb 0.31, offline): the files are
    complete once the service shuts down, at the latest when the process exits (wandb.teardown())."""

    def __init__(self, tracking: Tracking, run_dir: Path, config: Mapping[str, Any]):
        import wandb  # noqa: PLC0415 - optional extra

        run_id = tracking.run_id or run_dir.name
        root = Path(tracking.dir) if tracking.dir else (None if os.environ.get("WANDB_DIR") else run_dir)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        # create_new: the members of a batched attempt are concurrent runs of one process
        self.run = wandb.init(project=tracking.project, id=run_id, name=run_id, resume="allow",
                              dir=str(root) if root is not None else None, reinit="create_new",
                              config={**config, **tracking.context}, tags=_tags(tracking.tags),
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                                      save_code=False))

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self.run.log(tracker_scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


class TensorBoardTracker:
    """Scalars in <dir>/tensorboard/ (tensorboardX's SummaryWriter); events after `resume_step` from an
    earlier session are purged."""

    def __init__(self, tracking: Tracking, run_dir: Path, config: Mapping[str, Any], resume_step: int):
        from tensorboardX import SummaryWriter  # noqa: PLC0415 - optional extra

        root = Path(tracking.dir) / (tracking.run_id or run_dir.name) if tracking.dir else run_dir
        self.writer = SummaryWriter(logdir=str(root / "tensorboard"), purge_step=resume_step + 1,
                                    flush_secs=30)
        if resume_step < 0:
            context = {**tracking.context, "tags": list(tracking.tags)}
            text = json.dumps({**config, **context}, indent=1, default=str)
            self.writer.add_text("config", f"```\n{text}\n```", 0)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        for name, value in tracker_scalars(record).items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class Trackers:
    """The trackers of one run, fanned out; one that raises warns once and is dropped (the run goes on)."""

    def __init__(self, opened: dict[str, Tracker], where: Path):
        self.opened, self.where = dict(opened), where

    def _each(self, what: str, fn: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self.opened.items()):
            try:
                fn(tracker)
            except Exception as e:  # noqa: BLE001 - a mirror's trouble never stops the run
                del self.opened[name]
                warnings.warn(f"{self.where}: the {name} tracker failed to {what} ({type(e).__name__}: {e}); "
                              "it is dropped, metrics.jsonl is complete", stacklevel=3)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self._each("log", lambda t: t.log(step, record))

    def close(self) -> None:
        self._each("close", lambda t: t.close())
        self.opened = {}


def open_trackers(tracking: Tracking, run_dir: Path, config: Mapping[str, Any], resume_step: int) -> Trackers:
    """The run's trackers, opened for rows after resume_step (-1: a fresh start)."""
    factories = {"wandb": lambda: WandbTracker(tracking, run_dir, config),
                 "tensorboard": lambda: TensorBoardTracker(tracking, run_dir, config, resume_step)}
    opened: dict[str, Tracker] = {}
    for kind in tracking.kinds:
        try:
            opened[kind] = factories[kind]()
        except Exception as e:  # noqa: BLE001 - e.g. W&B online without a login: train anyway
            warnings.warn(f"{run_dir}: the {kind} tracker could not start ({type(e).__name__}: {e}); training "
                          "without it, metrics.jsonl is complete", stacklevel=2)
    return Trackers(opened, run_dir)


class TrackedLog(MetricsLog):
    """A MetricsLog whose appended rows are mirrored to trackers, opened when the log is (re)started, so
    they resume where the log does."""

    def __init__(self, path: str | Path, tracking: Tracking, config: Mapping[str, Any]):
        super().__init__(path)
        self.tracking, self.config = tracking, config
        self.trackers: Trackers | None = None

    def restart_at(self, step: int) -> list[dict]:
        rows = super().restart_at(step)
        if self.trackers is not None:
            self.trackers.close()
        self.trackers = open_trackers(self.tracking, self.path.parent, self.config, max(step, -1))
        return rows

    def append(self, row: dict) -> None:
        super().append(row)
        if self.trackers is not None and isinstance(row.get("step"), int):
            self.trackers.log(row["step"], row)

    def close(self) -> None:
        super().close()
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None


def metrics_log(path: str | Path, tracking: Tracking | None, cfg: Any) -> MetricsLog:
    """The run's metrics.jsonl, mirrored to the trackers `tracking` names (none: a plain MetricsLog);
    the trackers' config is cfg's (a Config) dotted keys."""
    if tracking is None or not tracking.kinds:
        return MetricsLog(path)
    from scaling.config import to_dict  # noqa: PLC0415
    from scaling.identity import flatten  # noqa: PLC0415

    return TrackedLog(path, tracking, flatten(to_dict(cfg)))


__all__ = ["KINDS", "Tracking", "Tracker", "WandbTracker", "TensorBoardTracker", "Trackers", "TrackedLog",
           "parse_kinds", "check_available", "tracker_key", "tracker_scalars", "open_trackers", "metrics_log"]

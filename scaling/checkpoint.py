"""Orbax checkpoints of the train state, with fallback to an older step when the newest is corrupt."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()

    def restore_latest(self, target: Any) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that restores, or None. A checkpoint that fails to
        restore is reported with its path and skipped, so a corrupt file never passes for progress."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                warnings.warn(f"checkpoint {self.directory / str(step)} is unreadable ({type(e).__name__}: {e}); "
                              "trying an older one", stacklevel=2)
        return None

    def close(self) -> None:
        self.manager.close()

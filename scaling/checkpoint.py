"""Orbax checkpoints of the train state, each with a digest of its files written next to it.

Restoring takes the newest checkpoint that is intact: its files match the digest recorded when it was
written (checkpoints written before digests existed have none and are taken on trust), orbax reads it,
and every value it restores is finite (a finite run never checkpoints NaN: garbage bytes do). A step
that fails any of these is set aside in <run>/quarantine/ (kept for inspection, never deleted) with a
warning naming both paths, so training resumes from an older step and can save that step again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from scaling.logs import write_json_atomic

logging.getLogger("absl").setLevel(logging.WARNING)

DIGESTS = "digests.json"  # in the checkpoint directory: {step: blake2b of the step directory's files}


def digest_of(step_dir: Path) -> str:
    """blake2b over every file of a checkpoint directory (relative path and bytes, in sorted order)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(step_dir)).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def all_finite(tree: Any) -> bool:
    """Whether every float value of tree is finite; arrays spread over several processes are reduced on
    their mesh (each process reads only its shards), so every process gets the same answer."""
    local, spread = [], []  # spread: arrays this process holds only some shards of
    for x in jax.tree_util.tree_leaves(tree):
        if np.issubdtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype, np.inexact):
            (spread if isinstance(x, jax.Array) and not x.is_fully_addressable else local).append(x)
    if not all(np.isfinite(np.asarray(x)).all() for x in local):
        return False
    if not spread:
        return True
    replicated = NamedSharding(spread[0].sharding.mesh, PartitionSpec())
    finite = jax.jit(lambda xs: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in xs])), out_shardings=replicated)
    return bool(finite(spread))


def _barrier(name: str) -> None:
    """Every process of a jax.distributed job waits here (a no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class Checkpointer:
    """In a job of several processes every process saves and restores (orbax writes each process's
    shards), and only process 0 (`primary`) writes the digests and sets damaged steps aside: the others
    read the same directory, which must be on a filesystem every host sees."""

    def __init__(self, directory: str | Path, keep: int = 2, primary: bool = True):
        self.directory = Path(directory).absolute()
        self.primary = primary
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any) -> None:
        self._record_digest(step, None)  # until the new files are complete, no digest vouches for them
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()
        _barrier(f"scaling-checkpoint-saved-{step}")  # every process's shards are in place before the digest
        self._record_digest(step, digest_of(self.directory / str(step)))

    def restore_latest(self, target: Any) -> tuple[int, Any] | None:
        """(step, state) of the newest intact checkpoint, or None. Each step that is not intact is set aside
        with a warning, so a damaged file never passes for progress nor blocks saving that step again."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            state, problem = self._restore(step, target)
            if problem is None:
                return step, state
            self._set_aside(step, problem)
        return None

    def _restore(self, step: int, target: Any) -> tuple[Any, str | None]:
        expected = self._digests().get(str(step))
        if expected is not None and digest_of(self.directory / str(step)) != expected:
            return None, "is unreadable (its files do not match the digest recorded when it was written)"
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
            return None, f"is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
        if not all_finite(state):
            return None, "is unreadable (it restores non-finite values)"
        return state, None

    def _set_aside(self, step: int, problem: str) -> None:
        source = self.directory / str(step)
        dest = self.directory.parent / "quarantine" / time.strftime("%Y%m%d-%H%M%S") / str(os.getpid()) / f"ckpt-{step}"
        if self.primary:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
            warnings.warn(f"checkpoint {source} {problem}; set aside in {dest}, trying an older one", stacklevel=3)
        _barrier(f"scaling-checkpoint-set-aside-{step}")  # the others list the steps once it is gone
        self.manager.reload()

    def _digests(self) -> dict[str, str]:
        try:
            data = json.loads((self.directory / DIGESTS).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _record_digest(self, step: int, digest: str | None) -> None:
        if not self.primary:
            return
        present = {str(s) for s in self.manager.all_steps()} | {str(step)}
        digests = {s: d for s, d in self._digests().items() if s in present and s != str(step)}
        if digest is not None:
            digests[str(step)] = digest
        write_json_atomic(self.directory / DIGESTS, digests)

    def close(self) -> None:
        self.manager.close()

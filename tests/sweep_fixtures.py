"""Tiny experiments for the sweep tests: every run shares one program (scaling.hyper), so
a whole test sweep compiles once per process, and a persistent compilation cache shared between test
processes makes restarted workers cheap."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

# A tiny MLP LM on synthetic data: about half a second per run once compiled.
TINY_BASE: dict[str, Any] = {
    "model.kind": "mlp", "model.width": 32, "model.depth": 2, "model.context": 32, "model.window": 4,
    "data.source": "synthetic", "run.batch_size": 8, "run.steps": 12, "run.log_every": 4,
    "run.checkpoint_every": 4, "run.eval_tokens": 512,
}


def write_experiment(path: str | Path, lrs: list[float], seeds: list[int] = (0,), base: dict | None = None,
                     extra: str = "") -> Path:
    """An experiment file sweeping optim.lr x run.seed over TINY_BASE (updated with `base`)."""
    path = Path(path)
    path.write_text(
        "from sweeps.spec import axis, product\n"
        f"BASE = {({**TINY_BASE, **(base or {})})!r}\n"
        f"SWEEP = product(axis('optim.lr', {list(lrs)!r}), axis('run.seed', {list(seeds)!r}))\n" + extra)
    return path


def shared_jax_cache() -> Path:
    """A persistent compilation cache shared by the sweep tests' worker processes (speed only: entries
    are keyed by the program, compiler and device, never by a test)."""
    path = Path(tempfile.gettempdir()) / f"scaling-sweep-tests-jax-cache-{os.getuid()}"
    path.mkdir(exist_ok=True)
    return path


class StopAfter(threading.Event):
    """A stop flag that turns on at its n-th poll (the worker polls it before each run and each step)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n <= 0 or super().is_set()

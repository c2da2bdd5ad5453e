"""What the batched minimisers return, and their status codes (no JAX: the numpy minimiser shares them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RUNNING, CONVERGED_GTOL, CONVERGED_FTOL, MAX_ITER, FAILED = 0, 1, 2, 3, 4
STATUS_NAMES = {RUNNING: "running", CONVERGED_GTOL: "gtol", CONVERGED_FTOL: "ftol", MAX_ITER: "max_iter",
                FAILED: "failed"}


@dataclass
class BatchResult:
    """Per-problem results (numpy, leading batch axis)."""

    x: np.ndarray  # (S, P) solutions
    f: np.ndarray  # (S,) objective at x
    grad_inf: np.ndarray  # (S,) max |gradient| at x
    n_iter: np.ndarray  # (S,) iterations used
    status: np.ndarray  # (S,) codes, see STATUS_NAMES

    def status_counts(self) -> dict[str, int]:
        return {STATUS_NAMES[int(k)]: int(v) for k, v in zip(*np.unique(self.status, return_counts=True))}

    def take(self, index) -> "BatchResult":
        """The rows `index` (an integer array: e.g. the row that carries each start after deduplication)."""
        return BatchResult(self.x[index], self.f[index], self.grad_inf[index], self.n_iter[index], self.status[index])

"""Host loop shared by the batched minimisers: run jitted chunks, then compact the live problems.

A state is a dict of arrays with leading batch axis S, holding at least `x`, `f`, `g`, `it` (iterations
done) and `status` (RUNNING until a stopping rule fires). Between chunks the still-running rows are
gathered into a smaller batch, padded to a size from a fixed ladder so that only a handful of shapes
is ever compiled (the ladder is absolute, so a grid fit and a bootstrap reuse each other's programs).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from analysis.optimize.result import FAILED, MAX_ITER, RUNNING, BatchResult

# Every distinct batch size costs a compilation (seconds on a small CPU), so batch sizes come from one
# fixed ladder (20 * 2^k: at most half padding) shared by all fits in a process, and a batch is
# compacted only once its live problems fit a size four times smaller.
LADDER = [20 * 2**k for k in range(11)]  # 20, 40, ..., 20480
MAX_BATCH = 5120  # larger problems are split into blocks of this size (bounds memory)


def bucket(n: int) -> int:
    for size in LADDER:
        if size >= n:
            return size
    raise ValueError(f"batch of {n} exceeds the ladder")


def pad_rows(tree, size: int):
    """Pad every leaf along axis 0 to `size` rows by repeating row 0 (padded rows are discarded)."""

    def pad(a):
        a = np.asarray(a)
        if a.shape[0] == size:
            return a
        return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)], axis=0)

    return jax.tree.map(pad, tree)


def run_compacted(init: Callable, chunk: Callable, x0: np.ndarray, aux, shared, *, max_iter: int,
                  max_batch: int = MAX_BATCH) -> BatchResult:
    """init(x, aux, shared) -> state and chunk(state, aux, shared) -> state are batched over axis 0 of
    x, aux and the state (chunk jitted; init may be plain numpy); `shared` (data common to all
    problems) is passed through as is. Rows that end with a non-finite objective are marked FAILED."""
    n = x0.shape[0]
    if n > max_batch:
        parts = [run_compacted(init, chunk, x0[i:i + max_batch], jax.tree.map(lambda a: a[i:i + max_batch], aux),
                               shared, max_iter=max_iter, max_batch=max_batch) for i in range(0, n, max_batch)]
        return BatchResult(*(np.concatenate([getattr(p, k) for p in parts])
                             for k in ("x", "f", "grad_inf", "n_iter", "status")))
    size = bucket(n)
    state = {k: np.array(v[:n]) for k, v in init(*pad_rows((x0, aux), size), shared).items()}
    active = np.flatnonzero(state["status"] == RUNNING)
    while active.size:
        if active.size <= size // 4:
            size = bucket(active.size)
        sub = pad_rows({k: v[active] for k, v in state.items()}, size)
        sub_aux = pad_rows(jax.tree.map(lambda a: np.asarray(a)[active], aux), size)
        out = chunk(sub, sub_aux, shared)
        for k in state:
            state[k][active] = np.asarray(out[k])[:active.size]
        stuck = active[(state["it"][active] >= max_iter) & (state["status"][active] == RUNNING)]
        state["status"][stuck] = MAX_ITER
        active = active[state["status"][active] == RUNNING]
    state["status"][~np.isfinite(state["f"])] = FAILED
    return BatchResult(x=state["x"], f=state["f"], grad_inf=np.max(np.abs(state["g"]), axis=1),
                       n_iter=state["it"], status=state["status"])

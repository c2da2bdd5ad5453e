"""Batched minimisers: thousands of small independent problems (multi-start x bootstrap) at once.

- `minimize_newton_np`: trust-region Newton with |eigenvalue| curvature in numpy (no compilation; the
  default for the Chinchilla fit on a CPU).
- `minimize_newton`: the same algorithm in JAX (jitted chunks of iterations; for accelerators and very
  large batches).
- `minimize_lbfgs`: L-BFGS with Armijo backtracking in JAX (a general fallback; needs only a scalar function).

The JAX minimisers run fixed-length chunks of iterations under jit and compact the still-running
problems between chunks (`driver.run_compacted`); call them under `with jax.enable_x64(True):` for
float64. They are imported on first use, so that the numpy path does not import JAX.
"""

import importlib

from analysis.optimize.newton_np import minimize_newton_np
from analysis.optimize.result import STATUS_NAMES, BatchResult

_LAZY = {"minimize_lbfgs": "lbfgs", "minimize_newton": "newton"}
__all__ = ["BatchResult", "STATUS_NAMES", "minimize_lbfgs", "minimize_newton", "minimize_newton_np"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"analysis.optimize.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'analysis.optimize' has no attribute {name!r}")

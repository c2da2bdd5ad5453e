"""Batched minimisers in JAX: thousands of small independent problems (multi-start x bootstrap) at once.

- `minimize_newton`: trust-region Newton with |eigenvalue| curvature (the default for the Chinchilla fit).
- `minimize_lbfgs`: L-BFGS with Armijo backtracking (a general fallback; needs only a scalar function).

Both run fixed-length chunks of iterations under jit and compact the still-running problems between
chunks (`driver.run_compacted`). Call them under `with jax.enable_x64(True):` for float64.
"""

from analysis.optimize.driver import STATUS_NAMES, BatchResult
from analysis.optimize.lbfgs import minimize_lbfgs
from analysis.optimize.newton import minimize_newton

__all__ = ["BatchResult", "STATUS_NAMES", "minimize_lbfgs", "minimize_newton"]

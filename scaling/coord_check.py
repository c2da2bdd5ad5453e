"""Coordinate checks (semantics of microsoft/mup `coord_check.py`): activation size per layer
versus width over the first few optimizer steps, and the log-log slope of each curve.

Under muP the hidden activations stay Θ(1) in width after a few steps (slope ≈ 0); under SP with
Adam they grow ∝ width after one step (slope ≈ 1). See notes/parametrizations.md section 5.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from scaling import models, parametrization
from scaling.config import ModelConfig, OptimConfig, ParamConfig
from scaling.optim import build_optimizer


def coord_check(model: ModelConfig, param: ParamConfig, optim: OptimConfig, widths: list[int],
                steps: int = 3, batch_size: int = 8, seed: int = 0) -> list[dict]:
    """Rows {width, t, name, l1} with l1 = mean |activation| after t optimizer steps (t = 0 at init).
    The same seed and the same token batch are used at every width."""
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, model.vocab_size, size=(batch_size, model.context + 1)), jnp.int32)
    rows = []
    for width in widths:
        cfg = dataclasses.replace(model, width=width)
        params, specs = models.init(cfg, jax.random.PRNGKey(seed), param, optim)
        tx = build_optimizer(optim, specs, parametrization.lr_multipliers(specs, param, optim), lambda s: 1.0)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state):
            grads = jax.grad(lambda p: models.loss_fn(cfg, p, tokens, param=param))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            _, acts = models.apply(cfg, params, tokens[:, :-1], param=param, return_activations=True)
            l1 = {k: jnp.mean(jnp.abs(v.astype(jnp.float32))) for k, v in acts.items()}
            return jax.tree_util.tree_map(jnp.add, params, updates), opt_state, l1

        for t in range(steps + 1):
            new_params, opt_state, l1 = step(params, opt_state)  # l1 measured before this update: at t
            rows += [{"width": width, "t": t, "name": k, "l1": float(v)} for k, v in l1.items()]
            params = new_params
    return rows


def slopes(rows: list[dict]) -> dict[tuple[str, int], float]:
    """Least-squares slope of log(l1) against log(width) for every (activation, t)."""
    out = {}
    for key in sorted({(r["name"], r["t"]) for r in rows}):
        pts = [(r["width"], r["l1"]) for r in rows if (r["name"], r["t"]) == key]
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[key] = float(np.polyfit(x, y, 1)[0])
    return out

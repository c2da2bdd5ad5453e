"""Coordinate checks (semantics of microsoft/mup `coord_check.py`): activation size per layer
versus width over the first few optimizer steps, and the log-log slope of each curve.

Under muP the activations stay Θ(1) in width after a few steps (slope ≈ 0); under SP with Adam the
hidden activations grow ∝ width after one step (slope ≈ 1) and so do the attention logits (Yang et al.,
Tensor Programs V, arXiv 2203.03466, coordinate checks).

Rows are {width, step, layer, rms, l1} (`COLUMNS`), exactly what `analysis.plots.plot_coord_check`
reads. Attention logits (activations named `attn_logits_*`, masked (B, H, T, T) arrays) are measured
over their causal entries only: the -1e30 mask above the diagonal would otherwise swamp the mean.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from scaling import models, parametrization
from scaling.config import ModelConfig, OptimConfig, ParamConfig
from scaling.models.layers import unmasked_logits
from scaling.optim import build_optimizer

COLUMNS = ("width", "step", "layer", "rms", "l1")
MASKED_PREFIX = "attn_logits"  # activations holding masked attention logits (B, H, T, T)


def measured(name: str, x: jax.Array) -> jax.Array:
    """The entries of activation `name` whose size the check measures (float32, flattened)."""
    x = x.astype(jnp.float32)
    if name.startswith(MASKED_PREFIX):
        x = unmasked_logits(x)
    return x.reshape(-1)


def coord_check(model: ModelConfig, param: ParamConfig, optim: OptimConfig, widths: list[int],
                steps: int = 3, batch_size: int = 8, seed: int = 0, n_seeds: int = 1) -> list[dict]:
    """Rows {width, step, layer, rms, l1}: the RMS and mean |x| of each activation after `step`
    optimizer steps (step 0 = at init), each averaged over `n_seeds` runs (seeds seed, seed+1, ...;
    microsoft/mup's `nseeds`). A run's seed draws its initialisation and its token batch, the same at
    every width; the lr is the optimizer's, constant, times the parametrization's per-leaf multipliers."""
    rows = []
    for width in widths:
        cfg = dataclasses.replace(model, width=width)
        specs = models.param_specs(cfg, param)
        tx = build_optimizer(optim, specs, parametrization.lr_multipliers(specs, param, optim), lambda s: 1.0)

        order: list[str] = []  # the model's activation order (a jitted dict comes back sorted by key)

        @jax.jit
        def step(params, opt_state, tokens):
            grads = jax.grad(lambda p: models.loss_fn(cfg, p, tokens, param=param))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            _, acts = models.apply(cfg, params, tokens[:, :-1], param=param, return_activations=True)
            order[:] = list(acts)
            stats = {}
            for k, v in acts.items():
                x = measured(k, v)
                stats[k] = (jnp.sqrt(jnp.mean(jnp.square(x))), jnp.mean(jnp.abs(x)))
            return jax.tree_util.tree_map(jnp.add, params, updates), opt_state, stats

        per_seed = []  # [seed][t] -> {layer: (rms, l1)}
        for s in range(seed, seed + n_seeds):  # one compilation per width, shared by the seeds
            rng = np.random.default_rng(s)
            tokens = jnp.asarray(rng.integers(0, model.vocab_size, size=(batch_size, model.context + 1)), jnp.int32)
            params, _ = models.init(cfg, jax.random.PRNGKey(s), param, optim)
            opt_state = tx.init(params)
            stats_t = []
            for _ in range(steps + 1):
                params, opt_state, stats = step(params, opt_state, tokens)  # measured before this update
                stats_t.append(jax.device_get(stats))
            per_seed.append(stats_t)
        for t in range(steps + 1):
            for k in order:
                rows.append({"width": width, "step": t, "layer": k,
                             "rms": float(np.mean([run[t][k][0] for run in per_seed])),
                             "l1": float(np.mean([run[t][k][1] for run in per_seed]))})
    return rows


def slopes(rows: list[dict], value: str = "rms") -> dict[tuple[str, int], float]:
    """Least-squares slope of log(value) against log(width) for every (layer, step)."""
    out = {}
    for key in sorted({(r["layer"], r["step"]) for r in rows}):
        pts = [(r["width"], r[value]) for r in rows if (r["layer"], r["step"]) == key]
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[key] = float(np.polyfit(x, y, 1)[0])
    return out

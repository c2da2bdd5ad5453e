"""Per-matrix and per-role norms of parameters and updates, computed inside the jitted step.

Keys (for metrics.jsonl):
  opnorm/param/<path>[/<layer>]   the role's operator norm of each matrix (stacked layers split out)
  opnorm/update/<path>[/<layer>]  the same for the update divided by the base lr of the step
  norm/param/<role>, norm/update/<role>   the largest of those per role (output: RMS->inf, hidden:
                                          RMS->RMS, embedding: 1->RMS; vectors: RMS)
  rms/param/<role>, rms/update/<role>     RMS over all entries of the role
Paths come from the tree only for labelling; roles come from the specs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from scaling.norms import role_norm
from scaling.specs import ROLES, spec_leaves_with_paths


def norm_metrics(specs: Any, params: Any, updates: Any, lr: jax.Array) -> dict[str, jax.Array]:
    labelled = spec_leaves_with_paths(specs)
    p_leaves = jax.tree_util.tree_leaves(params)
    u_leaves = jax.tree_util.tree_leaves(updates)
    inv_lr = jnp.where(lr > 0, 1.0 / jnp.maximum(lr, 1e-30), 0.0)
    out: dict[str, jax.Array] = {}
    for kind, leaves, scale in (("param", p_leaves, 1.0), ("update", u_leaves, inv_lr)):
        per_role_max: dict[str, list] = {r: [] for r in ROLES}
        per_role_sq: dict[str, list] = {r: [] for r in ROLES}
        for (path, spec), x in zip(labelled, leaves):
            x = x.astype(jnp.float32) * scale
            per_role_sq[spec.role].append((jnp.sum(jnp.square(x)), x.size))
            if spec.role == "vector":
                per_role_max["vector"].append(jnp.sqrt(jnp.mean(jnp.square(x))))
                continue
            vals = role_norm(x, spec.role)
            per_role_max[spec.role].append(jnp.max(vals))
            out[f"opnorm/{kind}/{path}"] = vals  # shape = stacked axes; split on the host
        for r in ROLES:
            if per_role_max[r]:
                out[f"norm/{kind}/{r}"] = jnp.max(jnp.stack(per_role_max[r]))
                total = sum(s for s, _ in per_role_sq[r])
                count = sum(n for _, n in per_role_sq[r])
                out[f"rms/{kind}/{r}"] = jnp.sqrt(total / count)
    return out


def flatten_for_log(metrics: dict) -> dict[str, float]:
    """Host-side: arrays of stacked layers become one key per layer."""
    flat = {}
    for k, v in metrics.items():
        v = jax.device_get(v)
        if getattr(v, "ndim", 0) == 0:
            flat[k] = float(v)
        else:
            for i, x in enumerate(v.reshape(-1)):
                flat[f"{k}/{i}"] = float(x)
    return flat

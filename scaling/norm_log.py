"""Per-matrix and per-role norms of parameters and updates, computed inside the jitted step.

Keys (for metrics.jsonl):
  opnorm/param/<path>[/<layer>]   the role's norm of each matrix or vector (stacked layers split out)
  opnorm/param/<path>.T           a tied embedding's transpose, the readout: its RMS->inf norm
  opnorm/update/<path>...         the same for the update divided by the leaf's own learning rate
                                  (base lr x schedule x the parametrization's per-leaf multiplier; the
                                  AdamW fallback's lr for roles an optimizer hands to it), so a unit-size
                                  step reads 1 whatever the leaf's lr; 0 for a leaf whose lr is 0
  norm/param/<role>, norm/update/<role>   the largest of those per role (output: RMS->inf, hidden:
                                  RMS->RMS, embedding: 1->RMS; vectors: RMS of each layer's vector). With
                                  tied embeddings norm/<kind>/output is the readout's (the transpose's).
  rms/param/<role>, rms/update/<role>     RMS over all entries of the role
Paths come from the tree only for labelling; roles come from the specs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from scaling.norms import rms_to_inf, role_norm
from scaling.specs import ROLES, spec_leaves_with_paths


def _leaf_norms(labelled, leaves, kind: str, scales) -> dict[str, jax.Array]:
    out: dict[str, jax.Array] = {}
    per_role_max: dict[str, list] = {r: [] for r in ROLES}
    per_role_sq: dict[str, list] = {r: [] for r in ROLES}
    for (path, spec), x, scale in zip(labelled, leaves, scales):
        x = x.astype(jnp.float32) * scale
        per_role_sq[spec.role].append((jnp.sum(jnp.square(x)), x.size))
        vals = role_norm(x, spec.role)
        per_role_max[spec.role].append(jnp.max(vals))
        out[f"opnorm/{kind}/{path}"] = vals  # shape = stacked axes; split on the host
        if spec.tied_output:
            readout = rms_to_inf(jnp.swapaxes(x, -1, -2))
            per_role_max["output"].append(jnp.max(readout))
            out[f"opnorm/{kind}/{path}.T"] = readout
    for r in ROLES:
        if per_role_max[r]:
            out[f"norm/{kind}/{r}"] = jnp.max(jnp.stack(per_role_max[r]))
        if per_role_sq[r]:
            total = sum(s for s, _ in per_role_sq[r])
            count = sum(n for _, n in per_role_sq[r])
            out[f"rms/{kind}/{r}"] = jnp.sqrt(total / count)
    return out


def norm_metrics(specs: Any, params: Any, updates: Any = None, leaf_lrs: Any = None) -> dict[str, jax.Array]:
    """Norms of `params` and, when given, of `updates` divided by `leaf_lrs` (a tree of per-leaf
    learning rates, scalars, of the params' structure)."""
    labelled = spec_leaves_with_paths(specs)
    p_leaves = jax.tree_util.tree_leaves(params)
    out = _leaf_norms(labelled, p_leaves, "param", [1.0] * len(p_leaves))
    if updates is not None:
        lrs = [jnp.asarray(lr, jnp.float32) for lr in jax.tree_util.tree_leaves(leaf_lrs)]
        inv_lrs = [jnp.where(lr > 0, 1.0 / jnp.maximum(lr, 1e-30), 0.0) for lr in lrs]
        out.update(_leaf_norms(labelled, jax.tree_util.tree_leaves(updates), "update", inv_lrs))
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

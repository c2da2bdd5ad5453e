"""Operator norms of kernels in the (fan_in, fan_out) layout, batched over leading axes.

Definitions follow Filatov et al. (arXiv 2510.03871, Eqs. 4-6) and Scion (Pethick et al., arXiv
2502.07529), transposed to y = x @ W:
  spectral    sigma_max(W)
  rms_to_rms  sqrt(fan_in / fan_out) * sigma_max(W)         hidden matrices
  rms_to_inf  sqrt(fan_in) * max_j ||W[:, j]||_2            output (one column per vocabulary item)
  l1_to_rms   max_i ||W[i, :]||_2 / sqrt(fan_out)          embedding (one row per token)
Each returns an array of shape W.shape[:-2].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _f32(w):
    return jnp.asarray(w, jnp.float32)


def spectral(w: jax.Array, method: str = "svd", iters: int = 20) -> jax.Array:
    """Largest singular value. "svd" is exact (use for logging small matrices); "power" runs
    `iters` power iterations on WᵀW from a fixed start (a lower bound that converges from below)."""
    w = _f32(w)
    if method == "svd":
        return jnp.linalg.svd(w, compute_uv=False)[..., 0]
    if method != "power":
        raise ValueError(f"spectral(method={method!r}) must be 'svd' or 'power'")
    v = jnp.ones(w.shape[:-2] + (w.shape[-1],), jnp.float32) / jnp.sqrt(w.shape[-1])

    def body(_, v):
        u = jnp.einsum("...io,...o->...i", w, v)
        v = jnp.einsum("...io,...i->...o", w, u)
        return v / (jnp.linalg.norm(v, axis=-1, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    return jnp.linalg.norm(jnp.einsum("...io,...o->...i", w, v), axis=-1)


def rms_to_rms(w: jax.Array, method: str = "svd") -> jax.Array:
    fan_in, fan_out = w.shape[-2:]
    return jnp.sqrt(fan_in / fan_out) * spectral(w, method)


def rms_to_inf(w: jax.Array) -> jax.Array:
    fan_in = w.shape[-2]
    return jnp.sqrt(fan_in) * jnp.max(jnp.linalg.norm(_f32(w), axis=-2), axis=-1)


def l1_to_rms(w: jax.Array) -> jax.Array:
    fan_out = w.shape[-1]
    return jnp.max(jnp.linalg.norm(_f32(w), axis=-1), axis=-1) / jnp.sqrt(fan_out)


def rms(x: jax.Array) -> jax.Array:
    x = _f32(x)
    return jnp.sqrt(jnp.mean(jnp.square(x)))


# The norm each role is measured in (notes/norm_transfer.md section 2). Vectors use plain RMS.
ROLE_NORM = {"embedding": l1_to_rms, "hidden": rms_to_rms, "output": rms_to_inf}


def role_norm(w: jax.Array, role: str) -> jax.Array:
    """The operator norm a role is measured in, per stacked matrix; RMS over the last axis for vectors."""
    if role == "vector":
        return jnp.sqrt(jnp.mean(jnp.square(_f32(w)), axis=-1))
    return ROLE_NORM[role](w)

"""Shared pieces of the functional models: spec constructors, RMSNorm, RoPE, embedding lookup.

Dimension letters in names: B batch, T time, D width, H heads, K head dim, F MLP hidden, V vocab, L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scaling.specs import ParamSpec


def matrix_spec(shape: tuple[int, ...], role: str, axes: tuple[str, ...], residual_out: bool = False) -> ParamSpec:
    """A (possibly stacked) kernel in (fan_in, fan_out) layout."""
    return ParamSpec(tuple(shape), role, fan_in=shape[-2], fan_out=shape[-1], axes=axes, residual_out=residual_out)


def vector_spec(shape: tuple[int, ...], axes: tuple[str, ...], const_init: float) -> ParamSpec:
    return ParamSpec(tuple(shape), "vector", fan_in=1, fan_out=shape[-1], axes=axes, const_init=const_init)


def rms_norm(x: jax.Array, gain: jax.Array | None, eps: float) -> jax.Array:
    """RMSNorm over the last axis, statistics in float32; parameter-free when gain is None."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    if gain is not None:
        y = y * gain.astype(jnp.float32).reshape((1,) * (y.ndim - 1) + gain.shape)
    return y.astype(x.dtype)


def rope_tables(T: int, K: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables of shape (T, K/2) for rotary position embeddings (Su et al., arXiv 2104.09864)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, K, 2, dtype=jnp.float32) / K))
    angles_TxK2 = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles_TxK2), jnp.sin(angles_TxK2)


def apply_rope(x_BxTxHxK: jax.Array, cos_TxK2: jax.Array, sin_TxK2: jax.Array) -> jax.Array:
    """Rotate pairs (first half, second half) of each head vector by position-dependent angles."""
    half = x_BxTxHxK.shape[-1] // 2
    x1, x2 = x_BxTxHxK[..., :half], x_BxTxHxK[..., half:]
    cos = cos_TxK2[None, :, None, :].astype(x_BxTxHxK.dtype)
    sin = sin_TxK2[None, :, None, :].astype(x_BxTxHxK.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def embed_tokens(embed_VxD: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """Token lookup. For small vocabularies a one-hot matmul: its gradient is a dense matmul, much
    faster on CPU than the scatter-add that the gradient of a gather compiles to."""
    V = embed_VxD.shape[0]
    if V <= 4096:
        onehot_BxTxV = jax.nn.one_hot(tokens_BxT, V, dtype=embed_VxD.dtype)
        return onehot_BxTxV @ embed_VxD
    return jnp.take(embed_VxD, tokens_BxT, axis=0)


def cast(x: jax.Array, dtype) -> jax.Array:
    return x if dtype is None else x.astype(dtype)

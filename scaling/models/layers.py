"""Shared pieces of the functional models: spec constructors, RMSNorm, RoPE, embedding lookup.

Dimension letters in names: B batch, T time, D width, H heads, K head dim, F MLP hidden, V vocab, L layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from scaling.specs import ParamSpec


def matrix_spec(shape: tuple[int, ...], role: str, axes: tuple[str, ...], residual_out: bool = False,
                tied_output: bool = False) -> ParamSpec:
    """A (possibly stacked) kernel in (fan_in, fan_out) layout."""
    return ParamSpec(tuple(shape), role, fan_in=shape[-2], fan_out=shape[-1], axes=axes, residual_out=residual_out,
                     tied_output=tied_output)


def vector_spec(shape: tuple[int, ...], axes: tuple[str, ...], const_init: float) -> ParamSpec:
    return ParamSpec(tuple(shape), "vector", fan_in=1, fan_out=shape[-1], axes=axes, const_init=const_init)


def rms_norm(x: jax.Array, gain: jax.Array | None, eps: float) -> jax.Array:
    """RMSNorm over the last axis, statistics in float32; parameter-free when gain is None."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    if gain is not None:
        y = y * gain.astype(jnp.float32).reshape((1,) * (y.ndim - 1) + gain.shape)
    return y.astype(x.dtype)


def rope_tables(T: int, K: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables of shape (T, K/2) for rotary position embeddings (Su et al., arXiv 2104.09864).
    NumPy, so they enter the program as constants: computed in-graph, XLA fuses the sin/cos into
    every consumer and recomputes them per element of (B, T, H, K)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, K, 2, dtype=np.float32) / K))
    angles_TxK2 = np.arange(T, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(angles_TxK2), np.sin(angles_TxK2)


def apply_rope(x_BxTxHxK: jax.Array, cos_TxK2: np.ndarray, sin_TxK2: np.ndarray) -> jax.Array:
    """Rotate pairs (first half, second half) of each head vector by position-dependent angles.
    The halves are split by a reshape to (..., 2, K/2), not by slicing: on XLA:CPU the backward of
    slice + concatenate (pads and copies) cost a few percent of the reference model's step."""
    B, T, H, K = x_BxTxHxK.shape
    x_BxTxHx2xK2 = x_BxTxHxK.reshape(B, T, H, 2, K // 2)
    x1, x2 = x_BxTxHx2xK2[:, :, :, 0], x_BxTxHx2xK2[:, :, :, 1]
    cos = cos_TxK2[None, :, None, :].astype(x_BxTxHxK.dtype)
    sin = sin_TxK2[None, :, None, :].astype(x_BxTxHxK.dtype)
    return jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=3).reshape(B, T, H, K)


def causal_bias(T: int) -> np.ndarray:
    """Additive causal mask (T, T), a NumPy constant: 0 on and below the diagonal, -1e30 above."""
    return np.where(np.tril(np.ones((T, T), bool)), 0.0, -1e30).astype(np.float32)


def attention_logits(q_BxHxTxK: jax.Array, k_BxHxTxK: jax.Array, scale: float) -> jax.Array:
    """Masked float32 attention logits (B, H, T, T); the query is scaled first (T·K work, not T·T).
    Entries above the diagonal are about -1e30: measure logit sizes with `unmasked_logits`."""
    T = q_BxHxTxK.shape[-2]
    logits_BxHxTxT = jnp.einsum("bhqk,bhsk->bhqs", q_BxHxTxK * jnp.asarray(scale, q_BxHxTxK.dtype), k_BxHxTxK,
                                preferred_element_type=jnp.float32)
    return logits_BxHxTxT + causal_bias(T)[None, None]  # additive: cheaper on CPU than a select


def unmasked_logits(logits_BxHxTxT: jax.Array) -> jax.Array:
    """The causal (on-and-below-diagonal) entries of masked logits, (..., T(T+1)/2): the values
    softmax actually sees, without the -1e30 bias, for statistics such as a coordinate check."""
    rows, cols = np.tril_indices(logits_BxHxTxT.shape[-1])
    return logits_BxHxTxT[..., rows, cols]


def _attention_forward(q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, scale):
    probs_BxHxTxT = jax.nn.softmax(attention_logits(q_BxHxTxK, k_BxHxTxK, scale), axis=-1).astype(v_BxHxTxK.dtype)
    return jnp.einsum("bhqs,bhsk->bhqk", probs_BxHxTxT, v_BxHxTxK), probs_BxHxTxT


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q_BxHxTxK: jax.Array, k_BxHxTxK: jax.Array, v_BxHxTxK: jax.Array, scale: float) -> jax.Array:
    """Causal softmax attention in head-major layout (batch dims lead, so XLA:CPU emits plain batched
    matmuls). A custom VJP: the backward pass takes the softmax gradient as P ∘ (dP − rowsum(dO ∘ O))
    (the FlashAttention identity, Dao et al. arXiv 2205.14135 §B.2), one pass over the (T, T) arrays
    where autodiff makes several; with the pre-scaled query ~15 % off the reference model's step on CPU."""
    return _attention_forward(q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, scale)[0]


def _attention_fwd(q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, scale):
    out_BxHxTxK, probs_BxHxTxT = _attention_forward(q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, scale)
    return out_BxHxTxK, (q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, out_BxHxTxK, probs_BxHxTxT)


def _attention_bwd(scale, residuals, dout_BxHxTxK):
    q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, out_BxHxTxK, probs_BxHxTxT = residuals
    f32 = jnp.float32
    dv_BxHxTxK = jnp.einsum("bhqs,bhqk->bhsk", probs_BxHxTxT, dout_BxHxTxK.astype(probs_BxHxTxT.dtype))
    dprobs_BxHxTxT = jnp.einsum("bhqk,bhsk->bhqs", dout_BxHxTxK, v_BxHxTxK, preferred_element_type=f32)
    rowsum_BxHxTx1 = jnp.sum(dout_BxHxTxK.astype(f32) * out_BxHxTxK.astype(f32), axis=-1, keepdims=True)
    dlogits_BxHxTxT = (probs_BxHxTxT.astype(f32) * (dprobs_BxHxTxT - rowsum_BxHxTx1)).astype(q_BxHxTxK.dtype)
    s = jnp.asarray(scale, q_BxHxTxK.dtype)
    dq_BxHxTxK = jnp.einsum("bhqs,bhsk->bhqk", dlogits_BxHxTxT, k_BxHxTxK) * s
    dk_BxHxTxK = jnp.einsum("bhqs,bhqk->bhsk", dlogits_BxHxTxT, q_BxHxTxK * s)
    return dq_BxHxTxK, dk_BxHxTxK, dv_BxHxTxK.astype(v_BxHxTxK.dtype)


causal_attention.defvjp(_attention_fwd, _attention_bwd)


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

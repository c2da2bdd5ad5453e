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

from scaling import sharding


def _f32(w):
    return jnp.asarray(w, jnp.float32)


def spectral(w: jax.Array, method: str = "auto", iters: int | None = None) -> jax.Array:
    """Largest singular value of each matrix in the last two axes.

    "svd"      exact (LAPACK); slow on CPU beyond a few hundred (about 1.5 s for (4, 512, 512)).
    "lanczos"  Lanczos on the smaller Gram matrix with full reorthogonalisation, `iters` (default 64)
               steps: exact when min(fan_in, fan_out) <= iters, else relative error ~1e-6 even on Gaussian
               matrices (whose top singular values crowd together); ~0.1 s for (4, 512, 2048).
    "power"    `iters` (default 20) power iterations: a lower bound, cheapest, ~1% low on Gaussians.
    "auto"     svd when min(fan_in, fan_out) <= 64, else lanczos (what norm logging uses).
    Iterative methods start from a fixed pseudo-random vector, so logged values are deterministic.
    """
    w = _f32(w)
    if method == "auto":
        method = "svd" if min(w.shape[-2:]) <= 64 else "lanczos"
    if method == "svd":
        return _one_at_a_time(lambda m: jnp.linalg.svd(m, compute_uv=False)[..., 0], w)
    if method == "lanczos":
        return _lanczos_top_singular_value(w, iters or 64)
    if method == "power":
        return _power_top_singular_value(w, iters or 20)
    raise ValueError(f"spectral(method={method!r}) must be 'auto', 'svd', 'lanczos' or 'power'")


def _one_at_a_time(fn, x):
    """fn (a LAPACK call, batched over leading axes: one scalar per matrix) on x's matrices: batched on
    one device, one matrix after another inside a sharded program (sharding.active). A batched LAPACK
    call appears to spread its matrices over XLA:CPU's worker threads; in a sharded step whose mesh spans every
    CPU device of the process those threads all wait in the step's collectives, and the program deadlocks
    (seen on 4 and 8 fake devices, not with one device spare). One matrix per call is the same LAPACK
    routine on the same matrix: the values do not change."""
    if sharding.active() is None:
        return fn(x)
    lead = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    return jax.lax.map(fn, flat).reshape(lead)


def _gram_side(w):
    """(n, v -> Gram v) for the smaller Gram matrix: WᵀW (fo x fo) if fi >= fo, else WWᵀ (fi x fi)."""
    fan_in, fan_out = w.shape[-2:]
    if fan_in >= fan_out:
        return fan_out, lambda v: jnp.einsum("...io,...i->...o", w, jnp.einsum("...io,...o->...i", w, v))
    return fan_in, lambda v: jnp.einsum("...io,...o->...i", w, jnp.einsum("...io,...i->...o", w, v))


def _start_vector(lead, n):
    v = jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.float32)
    return jnp.broadcast_to(v / jnp.linalg.norm(v), lead + (n,))


def _power_top_singular_value(w, iters):
    n, gram = _gram_side(w)

    def body(_, v):
        v = gram(v)
        return v / (jnp.linalg.norm(v, axis=-1, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, _start_vector(w.shape[:-2], n))
    return jnp.sqrt(jnp.sum(v * gram(v), axis=-1))


def _lanczos_top_singular_value(w, iters):
    """sqrt of the top eigenvalue of the tridiagonal Lanczos matrix T = QᵀGQ of the Gram matrix G."""
    n, gram = _gram_side(w)
    m, lead = min(iters, n), w.shape[:-2]
    q_MxN = jnp.zeros(lead + (m, n), jnp.float32).at[..., 0, :].set(_start_vector(lead, n))
    diag_M = jnp.zeros(lead + (m,), jnp.float32)
    off_M = jnp.zeros(lead + (m,), jnp.float32)

    def body(k, carry):
        q_MxN, diag_M, off_M = carry
        q_N = q_MxN[..., k, :]
        r_N = gram(q_N)
        diag_M = diag_M.at[..., k].set(jnp.sum(r_N * q_N, axis=-1))
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough") for fp32
            r_N = r_N - jnp.einsum("...mn,...m->...n", q_MxN, jnp.einsum("...mn,...n->...m", q_MxN, r_N))
        b = jnp.linalg.norm(r_N, axis=-1)
        off_M = off_M.at[..., k].set(b)
        nxt = jnp.minimum(k + 1, m - 1)  # the last step's vector is not needed; leave the store as is
        q_next = jnp.where(k + 1 < m, r_N / jnp.maximum(b, 1e-30)[..., None], q_MxN[..., nxt, :])
        return q_MxN.at[..., nxt, :].set(q_next), diag_M, off_M

    _, diag_M, off_M = jax.lax.fori_loop(0, m, body, (q_MxN, diag_M, off_M))
    i = jnp.arange(m)
    t_MxM = jnp.zeros(lead + (m, m), jnp.float32).at[..., i, i].set(diag_M)
    t_MxM = t_MxM.at[..., i[:-1], i[1:]].set(off_M[..., :-1]).at[..., i[1:], i[:-1]].set(off_M[..., :-1])
    return jnp.sqrt(jnp.maximum(_one_at_a_time(lambda t: jnp.linalg.eigvalsh(t)[..., -1], t_MxM), 0.0))


def rms_to_rms(w: jax.Array, method: str = "auto") -> jax.Array:
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


# The norm each role is measured in (Filatov et al., arXiv 2510.03871). Vectors use plain RMS.
ROLE_NORM = {"embedding": l1_to_rms, "hidden": rms_to_rms, "output": rms_to_inf}


def role_norm(w: jax.Array, role: str) -> jax.Array:
    """The operator norm a role is measured in, per stacked matrix; RMS over the last axis for vectors."""
    if role == "vector":
        return jnp.sqrt(jnp.mean(jnp.square(_f32(w)), axis=-1))
    if role not in ROLE_NORM:
        raise ValueError(f"role_norm(role={role!r}): role must be one of embedding, hidden, output, vector")
    return ROLE_NORM[role](w)

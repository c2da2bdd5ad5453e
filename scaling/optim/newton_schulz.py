"""Newton–Schulz orthogonalization: an approximate polar factor UVᵀ of the last two axes.

Each step is the odd quintic X <- aX + (bA + cA²)X with A = XXᵀ, which maps every singular value by
p(σ) = aσ + bσ³ + cσ⁵ and keeps the singular vectors (KellerJordan/Muon `muon.py`).
- "muon": Keller's (3.4445, -4.7750, 2.0315) every step. It does NOT converge to UVᵀ: after 5 steps
  the singular values lie in about [0.68, 1.20] (notes/optimizers.md section 7).
- "polar_express": Amsel et al. (arXiv 2505.16932), the five triples used in KellerJordan/modded-nanogpt
  `train_gpt.py`; steps beyond five repeat (15/8, -10/8, 3/8), the polynomial the Polar Express
  schedule converges to (thinking-machines-lab/manifolds `msign.py`), which drives σ -> 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MUON_COEFFS = (3.4445, -4.7750, 2.0315)
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
CONVERGENT_COEFFS = (1.875, -1.25, 0.375)  # p(1) = 1, p'(1) = 0: the tail of Polar Express

# X0 = X / (factor * ||X||_F + eps). Keller adds eps = 1e-7 (optax 1e-8) to guard a zero matrix, which
# also shrinks the update of any matrix with ||G||_F near eps (notes section 8); we guard zero explicitly
# instead and default to eps = 0, so NS(cG) = NS(G) over the whole float32 range.
_PRENORM_FACTOR = {"muon": 1.0, "polar_express": 1.02}


def ns_schedule(coeffs: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) triple of every step."""
    if steps < 1:
        raise ValueError(f"newton_schulz(steps={steps}) must be >= 1")
    if coeffs == "muon":
        return [MUON_COEFFS] * steps
    if coeffs == "polar_express":
        return [POLAR_EXPRESS_COEFFS[i] if i < len(POLAR_EXPRESS_COEFFS) else CONVERGENT_COEFFS for i in range(steps)]
    raise ValueError(f"newton_schulz(coeffs={coeffs!r}) must be 'muon' or 'polar_express'")


def newton_schulz(x: jax.Array, steps: int = 5, coeffs: str = "muon", *, dtype=jnp.float32,
                  eps: float = 0.0) -> jax.Array:
    """Orthogonalize the last two axes of `x` (batched over leading axes, e.g. stacked layers).

    The Frobenius pre-normalisation is computed in fp32 whatever `dtype` is, after dividing by the largest
    entry so tiny matrices do not underflow; a zero matrix maps to zero. `eps` (added to the norm) is
    only for reproducing references (Keller 1e-7, optax 1e-8). The iteration runs in `dtype` (float32 at
    HIGHEST matmul precision, so no TF32 on GPUs, or bfloat16 as in Keller's code). Returns an array of
    x's shape and dtype.
    """
    schedule = ns_schedule(coeffs, steps)
    out_dtype = x.dtype
    x_MxN = jnp.asarray(x, jnp.float32)
    tall = x_MxN.shape[-2] > x_MxN.shape[-1]
    if tall:  # work in the wide orientation so A = XXᵀ is the smaller Gram matrix
        x_MxN = jnp.swapaxes(x_MxN, -1, -2)
    if eps:
        frob = jnp.sqrt(jnp.sum(jnp.square(x_MxN), axis=(-2, -1), keepdims=True))
        x_MxN = x_MxN / (_PRENORM_FACTOR[coeffs] * frob + eps)
    else:
        biggest = jnp.max(jnp.abs(x_MxN), axis=(-2, -1), keepdims=True)
        x_MxN = x_MxN / jnp.where(biggest > 0, biggest, 1.0)
        frob = jnp.sqrt(jnp.sum(jnp.square(x_MxN), axis=(-2, -1), keepdims=True))
        x_MxN = x_MxN / jnp.where(frob > 0, _PRENORM_FACTOR[coeffs] * frob, 1.0)
    x_MxN = x_MxN.astype(dtype)
    precision = jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None
    mm = lambda a, b: jnp.matmul(a, b, precision=precision)  # noqa: E731

    def step(x_MxN, abc):
        a, b, c = abc[0], abc[1], abc[2]
        a_MxM = mm(x_MxN, jnp.swapaxes(x_MxN, -1, -2))
        b_MxM = b * a_MxM + c * mm(a_MxM, a_MxM)
        return a * x_MxN + mm(b_MxM, x_MxN), None

    # a scan over the coefficient table: one compiled step however many steps (fast compiles)
    x_MxN, _ = jax.lax.scan(step, x_MxN, jnp.asarray(schedule, dtype))
    if tall:
        x_MxN = jnp.swapaxes(x_MxN, -1, -2)
    return x_MxN.astype(out_dtype)


def polar_svd(x: jax.Array) -> jax.Array:
    """The exact polar factor UVᵀ (thin SVD) of the last two axes; for tests and small matrices."""
    u, _, vt = jnp.linalg.svd(jnp.asarray(x, jnp.float32), full_matrices=False)
    return (u @ vt).astype(x.dtype)

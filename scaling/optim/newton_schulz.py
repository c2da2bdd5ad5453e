"""Newton–Schulz orthogonalization: an approximate polar factor UVᵀ of the last two axes.

Each step is the odd quintic X <- aX + (bA + cA²)X with A = XXᵀ, which maps every singular value by
p(σ) = aσ + bσ³ + cσ⁵ and keeps the singular vectors (KellerJordan/Muon `muon.py`).
- "muon": Keller's (3.4445, -4.7750, 2.0315) every step. It does NOT converge to UVᵀ: after 5 steps
  the singular values lie in about [0.68, 1.20].
- "polar_express": Amsel et al. (arXiv 2505.16932), the five triples used in KellerJordan/modded-nanogpt
  `train_gpt.py`; steps beyond five repeat (15/8, -10/8, 3/8), the polynomial the Polar Express
  schedule converges to (thinking-machines-lab/manifolds `msign.py`), which drives σ -> 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scaling.config_io import require

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


METHODS = ("direct", "gram", "auto")
COEFFS = ("muon", "polar_express")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class NewtonSchulzSettings:
    """The optim fields of an optimizer that orthogonalises with newton_schulz (Muon, Scion's spectral LMO)."""

    ns_steps: int = 5
    ns_coeffs: str = "muon"  # muon | polar_express
    ns_dtype: str = "float32"  # float32 | bfloat16: the iteration's dtype (Keller uses bf16)
    ns_method: str = "auto"  # direct | gram (Gram form with restarts: 1.5x faster on (d, 4d) kernels) | auto

    def check(self) -> None:
        require(self.ns_steps > 0, f"optim.ns_steps={self.ns_steps} must be positive")
        require(self.ns_coeffs in COEFFS, f"optim.ns_coeffs={self.ns_coeffs!r} must be one of {', '.join(COEFFS)}")
        require(self.ns_dtype in DTYPES, f"optim.ns_dtype={self.ns_dtype!r} must be one of {', '.join(DTYPES)}")
        require(self.ns_method in METHODS, f"optim.ns_method={self.ns_method!r} must be one of {', '.join(METHODS)}")
GRAM_RESTART_EVERY = 3  # steps between recomputing A = XXᵀ from the iterate itself (_gram_iteration)
GRAM_MIN_ASPECT = 2  # "auto" takes the Gram form from this long/short side ratio on


def newton_schulz(x: jax.Array, steps: int = 5, coeffs: str = "muon", *, dtype=jnp.float32,
                  eps: float = 0.0, method: str = "direct") -> jax.Array:
    """Orthogonalize the last two axes of `x` (batched over leading axes, e.g. stacked layers).

    The Frobenius pre-normalisation is computed in fp32 whatever `dtype` is, after dividing by the largest
    entry so tiny matrices do not underflow; a zero matrix maps to zero. `eps` (added to the norm) is
    only for reproducing references (Keller 1e-7, optax 1e-8). The iteration runs in `dtype` (float32 at
    HIGHEST matmul precision, so no TF32 on GPUs, or bfloat16 as in Keller's code). `method`: "direct"
    (the iteration as written), "gram" (the same polynomials carried on the Gram matrix with restarts,
    `_gram_iteration`: fewer FLOPs for elongated matrices, as accurate) or "auto" (gram when the long
    side is at least GRAM_MIN_ASPECT times the short one, direct otherwise).
    Returns an array of x's shape and dtype.
    """
    if method not in METHODS:
        raise ValueError(f"newton_schulz(method={method!r}) must be one of {', '.join(METHODS)}")
    schedule = ns_schedule(coeffs, steps)
    out_dtype = x.dtype
    x_MxN = jnp.asarray(x, jnp.float32)
    tall = x_MxN.shape[-2] > x_MxN.shape[-1]
    if tall:  # work in the wide orientation so A = XXᵀ is the smaller Gram matrix
        x_MxN = jnp.swapaxes(x_MxN, -1, -2)
    if method == "auto":
        method = "gram" if x_MxN.shape[-1] >= GRAM_MIN_ASPECT * x_MxN.shape[-2] else "direct"
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

    if method == "gram":
        x_MxN = _gram_iteration(x_MxN, schedule, mm)
    else:  # unrolled: on XLA:CPU a lax.scan over the steps was ~15 % slower (loop overhead, no fusion across)
        for a, b, c in schedule:
            a_MxM = mm(x_MxN, jnp.swapaxes(x_MxN, -1, -2))
            x_MxN = a * x_MxN + mm(b * a_MxM + c * mm(a_MxM, a_MxM), x_MxN)
    if tall:
        x_MxN = jnp.swapaxes(x_MxN, -1, -2)
    return x_MxN.astype(out_dtype)


def _gram_iteration(x_MxN: jax.Array, schedule, mm) -> jax.Array:
    """The same iterates, carried on the M x M Gram matrix: X_{k+1} = q_k(A_k) X_k with
    q_k(A) = aI + bA + cA², and since q_k(A_k) commutes with A_k, A_{k+1} = q_k(A_k) A_k q_k(A_k). So the
    long side N is touched only to form A and to apply the accumulated Q = q_k ... q_0 to X.

    Carried alone, the recurrence squares the condition number: rounding in A (relative 1e-7) acts like
    singular values of ~3e-4 in X, which the steps then amplify, so on rank-deficient inputs the error
    reached 1e-4 to 1e-3 against a float64 run of the direct iteration (direct: 1e-5). Every
    GRAM_RESTART_EVERY steps the iterate is therefore formed (X <- QX) and A recomputed from it. With one
    restart in five steps, on Gaussian, low-rank, rank-one and fast-decaying inputs, the error is within
    2x of the direct iteration's for Keller's coefficients and within 3.5x (at most 3e-5) for Polar
    Express on fast-decaying spectra, and its worst case is no worse than direct's
    (tests/test_optim_newton_schulz.py); in bfloat16 it was no less accurate than direct on the same
    inputs (both far off on rank-deficient ones). The restart schedule is our choice, from those
    measurements.

    Cost of 5 steps in units of M³ multiply-adds, with r = N/M: direct 5(2r + 1), this 4r + 14; so 45 vs
    30 for a (d, 4d) MLP kernel, and a loss for square ones (15 vs 18), which "auto" leaves to direct."""
    M = x_MxN.shape[-2]
    eye_MxM = jnp.eye(M, dtype=x_MxN.dtype).reshape((1,) * (x_MxN.ndim - 2) + (M, M))
    q_total_MxM = a_MxM = None
    for i, (a, b, c) in enumerate(schedule):
        if i % GRAM_RESTART_EVERY == 0:  # (re)start from the iterate itself
            if q_total_MxM is not None:
                x_MxN, q_total_MxM = mm(q_total_MxM, x_MxN), None
            a_MxM = mm(x_MxN, jnp.swapaxes(x_MxN, -1, -2))
        q_MxM = a * eye_MxM + b * a_MxM + c * mm(a_MxM, a_MxM)
        q_total_MxM = q_MxM if q_total_MxM is None else mm(q_MxM, q_total_MxM)
        if i + 1 < len(schedule) and (i + 1) % GRAM_RESTART_EVERY != 0:
            a_MxM = mm(mm(q_MxM, a_MxM), q_MxM)
    return mm(q_total_MxM, x_MxN)


def polar_svd(x: jax.Array) -> jax.Array:
    """The exact polar factor UVᵀ (thin SVD) of the last two axes; for tests and small matrices."""
    u, _, vt = jnp.linalg.svd(jnp.asarray(x, jnp.float32), full_matrices=False)
    return (u @ vt).astype(x.dtype)

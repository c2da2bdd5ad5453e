"""Scion's norms, their linear minimization oracles and boundary initialisations (Pethick et al.,
arXiv 2502.07529; LIONS-EPFL/scion `scion.py`), in the (fan_in, fan_out)
layout, batched over leading (stacked) axes.

lmo(g) = argmin_{||x|| <= radius} <g, x> = -radius * unit(g), with ||unit(g)|| = 1 and
<g, unit(g)> = ||g||_* (the dual norm). Per norm (fi, fo of one matrix; n = vector length):

  norm      ||W||                        ||G||_*                    unit(G)
  spectral  sqrt(fi/fo) sigma_max(W)     sqrt(fo/fi) sum_i sigma_i  sqrt(fo/fi) polar(G)
  colnorm   max_i ||W[i,:]||_2 / sqrt(fo) sqrt(fo) sum_i ||G[i,:]||_2 row i: sqrt(fo) G[i,:] / ||G[i,:]||_2
  rownorm   sqrt(fi) max_j ||W[:,j]||_2  sum_j ||G[:,j]||_2 / sqrt(fi) column j: G[:,j] / (sqrt(fi) ||G[:,j]||_2)
  sign      s max_ij |W_ij|              ||G||_1 / s                sign(G) / s
  bias_rms  ||b||_2 / sqrt(n)            sqrt(n) ||g||_2            g / RMS(g)
Boundary init (radius * a point of the unit sphere): spectral semi-orthogonal * sqrt(fo/fi); colnorm
Gaussian rows rescaled to ||.||_2 = sqrt(fo); rownorm Gaussian columns rescaled to 1/sqrt(fi); sign random
+-1/s; bias_rms the spec's constant (0 for biases, 1 for gains).

colnorm = 1->RMS (embedding: a token's vector has RMS <= radius), rownorm = RMS->inf (output),
spectral = RMS->RMS (hidden).
Sign's divisor s is the input width of the map the matrix applies (normalized Sign, for readouts:
then the unit step has RMS->inf norm 1 at every width): s = fi for hidden and output matrices, s = 1
for an untied embedding (one-hot input; the reference's Sign(normalized=False), LIONS-EPFL/scion
examples/shallow-nanogpt `model.py`), s = fo (the width d) for a tied embedding, which is also the
readout (as in the reference's tied modded-nanogpt example, `train_gpt_scion.py`), and s = 1 for vectors.
A tied embedding takes only sign: ColNorm's unit rows of RMS 1 give the readout an RMS->inf norm of d. The divisors get +1e-8 as in Scion's code,
so an all-zero row / column / gradient gives a zero direction (an absent token is not moved).
polar(G) is Newton–Schulz by default (approximate: its singular values lie in a band around 1; pass
polar=polar_svd for the exact oracle).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from scaling import norms as opnorms
from scaling.optim.newton_schulz import newton_schulz, polar_svd
from scaling.config_io import require
from scaling.specs import ROLES, ParamSpec

NORMS = ("spectral", "colnorm", "rownorm", "sign", "bias_rms")
VECTOR_NORMS = ("bias_rms", "sign")
MATRIX_NORMS = ("spectral", "colnorm", "rownorm", "sign")


@dataclasses.dataclass(frozen=True)
class PerRoleNorm:
    """Scion's norm per role (optim.norms): the geometry of each role's LMO and boundary init."""

    embedding: str = "colnorm"
    hidden: str = "spectral"
    output: str = "sign"
    vector: str = "bias_rms"

    def get(self, role: str) -> str:
        return getattr(self, role)

    def check(self, key: str = "optim.norms") -> None:
        for role in ROLES:
            name = self.get(role)
            require(name in NORMS, f"{key}.{role}={name!r} is not one of {', '.join(NORMS)}")
            allowed = VECTOR_NORMS if role == "vector" else MATRIX_NORMS
            what = "one of" if role == "vector" else "a matrix norm: one of"
            why = " (vectors have no matrix norm)" if role == "vector" else ""
            require(name in allowed, f"{key}.{role}={name!r} must be {what} {', '.join(allowed)}{why}")
EPS = 1e-8

__all__ = ["NORMS", "lmo", "unit_direction", "norm", "dual_norm", "boundary_init", "polar_svd", "sign_divisor"]


def _check(spec: ParamSpec, name: str) -> None:
    if name not in NORMS:
        raise ValueError(f"unknown Scion norm {name!r} (one of {', '.join(NORMS)})")
    if not spec.is_matrix and name not in VECTOR_NORMS:
        raise ValueError(f"norm {name!r} needs a matrix; a {spec.role} parameter takes {' or '.join(VECTOR_NORMS)}")
    if spec.is_matrix and name == "bias_rms":
        raise ValueError(f"norm 'bias_rms' is for vectors, not the {spec.role} matrix of shape {spec.shape}")
    if spec.tied_output and name != "sign":
        raise ValueError(f"a tied embedding is also the readout and takes norm 'sign', not {name!r}")


def sign_divisor(spec: ParamSpec) -> int:
    """The `s` of normalized Sign: the input width of the map the matrix applies (module docstring)."""
    if spec.role == "embedding":
        return spec.fan_out if spec.tied_output else 1
    return spec.fan_in


def _l2(x, axis):
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))


def unit_direction(g: jax.Array, spec: ParamSpec, name: str, polar: Callable = newton_schulz) -> jax.Array:
    """The unit-norm direction of steepest ascent: ||unit|| = 1 and <g, unit> = ||g||_*."""
    _check(spec, name)
    g = jnp.asarray(g, jnp.float32)
    fi, fo = spec.fan_in, spec.fan_out
    if name == "spectral":
        return math.sqrt(fo / fi) * polar(g)
    if name == "colnorm":
        return math.sqrt(fo) * g / (_l2(g, -1) + EPS)
    if name == "rownorm":
        return g / (math.sqrt(fi) * _l2(g, -2) + EPS)
    if name == "sign":
        return jnp.sign(g) / sign_divisor(spec)
    return g / (_l2(g, -1) / math.sqrt(g.shape[-1]) + EPS)  # bias_rms


def lmo(g: jax.Array, spec: ParamSpec, name: str, radius: float = 1.0, polar: Callable = newton_schulz) -> jax.Array:
    """argmin over the ball of `radius` in norm `name` of <g, x>: -radius * unit_direction(g)."""
    return -radius * unit_direction(g, spec, name, polar)


def norm(w: jax.Array, spec: ParamSpec, name: str) -> jax.Array:
    """||w|| in norm `name`, one value per stacked matrix or vector."""
    _check(spec, name)
    w = jnp.asarray(w, jnp.float32)
    if name == "spectral":
        return opnorms.rms_to_rms(w)
    if name == "colnorm":
        return opnorms.l1_to_rms(w)
    if name == "rownorm":
        return opnorms.rms_to_inf(w)
    if name == "sign":
        axes = (-2, -1) if spec.is_matrix else -1
        return sign_divisor(spec) * jnp.max(jnp.abs(w), axis=axes)
    return jnp.sqrt(jnp.mean(jnp.square(w), axis=-1))  # bias_rms


def dual_norm(g: jax.Array, spec: ParamSpec, name: str) -> jax.Array:
    """||g||_* = max over ||x|| <= 1 of <g, x>, one value per stacked matrix or vector."""
    _check(spec, name)
    g = jnp.asarray(g, jnp.float32)
    fi, fo = spec.fan_in, spec.fan_out
    if name == "spectral":
        return math.sqrt(fo / fi) * jnp.sum(jnp.linalg.svd(g, compute_uv=False), axis=-1)
    if name == "colnorm":
        return math.sqrt(fo) * jnp.sum(_l2(g, -1)[..., 0], axis=-1)
    if name == "rownorm":
        return jnp.sum(_l2(g, -2)[..., 0, :], axis=-1) / math.sqrt(fi)
    if name == "sign":
        axes = (-2, -1) if spec.is_matrix else -1
        return jnp.sum(jnp.abs(g), axis=axes) / sign_divisor(spec)
    return math.sqrt(g.shape[-1]) * _l2(g, -1)[..., 0]  # bias_rms


def _semi_orthogonal(key: jax.Array, lead: tuple[int, ...], fi: int, fo: int) -> jax.Array:
    """Haar-random (fi, fo) matrices with all singular values 1 (QR of a Gaussian, signs fixed by diag R)."""
    tall_shape = lead + (max(fi, fo), min(fi, fo))
    q, r = jnp.linalg.qr(jax.random.normal(key, tall_shape, jnp.float32))
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return q if fi >= fo else jnp.swapaxes(q, -1, -2)


def boundary_init(spec: ParamSpec, key: jax.Array, name: str, radius: float = 1.0) -> jax.Array:
    """A random float32 array of spec.shape on the sphere of `radius` in norm `name` (Scion's init:
    W0 = radius * init, so constrained Scion starts on the boundary of its ball).

    Vectors with bias_rms start at the spec's constant (const_init: 1 for gains, 0 for biases; zero
    is inside every ball, and a gain of 1 has RMS 1)."""
    _check(spec, name)
    shape, fi, fo = tuple(spec.shape), spec.fan_in, spec.fan_out
    if name == "bias_rms":
        return jnp.full(shape, spec.const_init or 0.0, jnp.float32)
    if name == "sign":
        return radius * jax.random.rademacher(key, shape, jnp.float32) / sign_divisor(spec)
    if name == "spectral":
        return radius * math.sqrt(fo / fi) * _semi_orthogonal(key, shape[:-2], fi, fo)
    w = jax.random.normal(key, shape, jnp.float32)
    if name == "colnorm":
        return radius * math.sqrt(fo) * w / _l2(w, -1)
    return radius * w / (math.sqrt(fi) * _l2(w, -2))  # rownorm

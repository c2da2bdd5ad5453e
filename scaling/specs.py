"""Parameter specs: the one record that every per-layer decision reads.

Every parameter leaf has a `ParamSpec` next to it (same pytree structure). The parametrization,
optimizer routing, norm logging and sharding read the spec; nothing matches parameter names.
`Multipliers` are the forward multipliers the parametrization hands the model's apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

ROLES = ("embedding", "hidden", "output", "vector")


@dataclasses.dataclass(frozen=True)
class PerRole:
    """One value per parameter role (embedding, hidden, output, vector)."""

    embedding: float = 1.0
    hidden: float = 1.0
    output: float = 1.0
    vector: float = 1.0

    def get(self, role: str) -> float:
        return getattr(self, role)


@dataclasses.dataclass(frozen=True)
class Multipliers:
    """Forward multipliers set by the parametrization (scalars, width-dependent under muP)."""

    attn: float  # attention logits scale
    output: float = 1.0  # logits multiplier (muP Table 8 form, used with tied embeddings)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """What a parameter is, independent of what it is called.

    shape: the full array shape, leading stacked axes included (e.g. (L, fan_in, fan_out)).
    role: one of ROLES. embedding = one-hot input -> width; hidden = width -> width;
        output = width -> vocabulary (any infinite->finite map); vector = gains and biases.
    fan_in, fan_out: of ONE matrix, in the (fan_in, fan_out) layout y = x @ W; leading axes are
        a stack of independent matrices (`n_stacked`). For vectors fan_in = 1, fan_out = size.
    axes: logical axis names, one per dimension (for sharding).
    residual_out: the matrix writes into the residual stream (attention wo, MLP down-projection);
        with `model.residual_out_init` the init scales these by 1/sqrt(2L).
    tied_output: an embedding that is also the readout (tied embeddings: logits = h @ Wᵀ), so its
        transpose is measured and stepped as an output matrix whose fan_in is the width (fan_out).
    fan_in_base, fan_out_base: the same dimensions in the base (tuned) model, for muP ratios.
    const_init: vectors only: the constant they start at (1 for norm gains, 0 for biases).
    """

    shape: tuple[int, ...]
    role: str
    fan_in: int
    fan_out: int
    axes: tuple[str, ...]
    residual_out: bool = False
    tied_output: bool = False
    fan_in_base: int | None = None
    fan_out_base: int | None = None
    const_init: float | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"ParamSpec.role={self.role!r} is not one of {ROLES}")
        if len(self.axes) != len(self.shape):
            raise ValueError(f"ParamSpec.axes={self.axes} does not match shape {self.shape}")
        if self.tied_output and self.role != "embedding":
            raise ValueError(f"ParamSpec.tied_output is for embeddings, not a {self.role} parameter")
        if self.is_matrix and tuple(self.shape[-2:]) != (self.fan_in, self.fan_out):
            raise ValueError(f"matrix spec shape {self.shape} disagrees with (fan_in, fan_out)="
                             f"({self.fan_in}, {self.fan_out})")

    @property
    def is_matrix(self) -> bool:
        return self.role != "vector"

    @property
    def n_stacked(self) -> int:
        """How many independent matrices (or vectors) the leaf holds along its leading axes."""
        lead = self.shape[:-2] if self.is_matrix else self.shape[:-1]
        n = 1
        for s in lead:
            n *= s
        return n

    @property
    def width_mult_in(self) -> float:
        """m = fan_in / fan_in_base (1 at the base width, or when no base is set)."""
        return self.fan_in / (self.fan_in_base or self.fan_in)

    @property
    def width_mult_out(self) -> float:
        return self.fan_out / (self.fan_out_base or self.fan_out)


# ParamSpec is not a registered pytree node, so it is a leaf of any tree it sits in: close over spec
# trees in jitted functions rather than passing them as arguments.


def is_spec(x: Any) -> bool:
    return isinstance(x, ParamSpec)


def tree_map_specs(fn: Callable[..., Any], specs: Any, *rest: Any) -> Any:
    """Map over a spec tree (specs are leaves) and any number of trees of the same structure."""
    return jax.tree_util.tree_map(fn, specs, *rest, is_leaf=is_spec)


def spec_leaves_with_paths(specs: Any) -> list[tuple[str, ParamSpec]]:
    """[(dotted path, spec)] in tree order; paths are for logging only, never for routing."""
    flat, _ = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)
    return [(path_str(p), s) for p, s in flat]


def path_keys(path) -> tuple[str, ...]:
    """A pytree key path as plain strings (dict keys, sequence indices, attribute names)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return tuple(parts)


def path_str(path) -> str:
    return ".".join(path_keys(path))

"""Sharded training over a device mesh: named shardings from the specs' logical axes.

The mesh has three axes (MESH_AXES): data (batch only), fsdp (batch and parameters: ZeRO-3 style, the
weights are gathered where they are used) and tensor (parameters, Megatron-style splits of heads and MLP
hidden units). `run.mesh` gives their sizes (default 1 x 1 x 1: one device, today's program untouched);
`run.sharding_rules` maps each logical axis name of a ParamSpec (and "batch") to mesh axes, as the
logical-axis rules of MaxText and levanter do; flax.linen.logical_to_mesh_axes turns one spec's axes into
a PartitionSpec. Two refinements on top of flax's mapping: a logical name repeated within one spec
(the MLP LM's (layers, mlp, mlp) kernels) shards its first dimension only, and a dimension its mesh axes do
not divide is replicated (big_vision's fsdp tactic skips such dimensions the same way), so every model
size runs on every mesh; the batch must divide (RunConfig checks it).

Optimizer state that mirrors the parameters (moments, momenta) is sharded like them, matched by tree
path (the state leaf whose key path ends with a parameter's path and has its shape); the rest (step
counts) is replicated.

Whole-matrix operations (Muon's Newton–Schulz, Scion's spectral LMO) run through `per_matrix`: with an
active layout every matrix is orthogonalised once, whole, on one owner device. Matrices of one shape are
stacked, padded to a multiple of the device count and the stack axis is sharded over every mesh axis
(device i owns a contiguous block of stack/devices matrices: the balanced assignment of the Disco
design of distributed Muon, with blocks where Disco deals round robin), the function runs there, and a second
sharding constraint sends each result back to its parameter's layout. XLA lowers the moves to
all-to-alls, and the way back to a layout replicated over data to an all-gather (benchmarks/README.md,
"Communication per sharded step"). Elementwise and row- or column-separable operations (AdamW, ColNorm,
RowNorm, Sign) never go through it: they run on the shards, a sharded reduction costing one all-reduce
of a norm per row.

`collective_bytes` reads a compiled program's communication volume (bytes per device) from its HLO.

FSDP gathers each parameter leaf whole before the forward pass (Layout.compute_spec, Program.for_compute):
the ZeRO-3 volume (an all-gather of the weights, their gradients reduced back to the shards), with a full
copy of the weights on every device during the step; per-block gathering would need activation
constraints inside the model. Without the gather XLA's propagation split activations along the model
dimension instead and moved 28x more bytes (benchmarks/README.md).

Seen on XLA:CPU (jax 0.10.2, fake devices on a 2-core VM): a sharded step whose mesh spans every CPU
device of the process stalled with every thread idle when it made a batched LAPACK call (the norm
metrics' SVD), on 4 and 8 devices, never with one device spare; norm logging therefore calls LAPACK one
matrix at a time inside sharded programs (scaling.norms). Manifold Muon's dual ascent on such a mesh
(data=2 x fsdp=4 of 8) still stalls now and then; with jax_num_cpu_devices one above the mesh it runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from scaling.config_io import ConfigError, require
from scaling.specs import ParamSpec, is_spec, path_keys, tree_map_specs

MESH_AXES = ("data", "fsdp", "tensor")

__all__ = ["MESH_AXES", "MeshShape", "ShardingRules", "Layout", "partition_spec", "layout_of", "active", "per_matrix",
           "collective_bytes"]


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """run.mesh: the size of each mesh axis; their product is the number of devices a run uses."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1

    @property
    def size(self) -> int:
        return self.data * self.fsdp * self.tensor

    def axis_size(self, axes: tuple[str, ...]) -> int:
        n = 1
        for a in axes:
            n *= getattr(self, a)
        return n

    def check(self, key: str = "run.mesh") -> None:
        for a in MESH_AXES:
            require(getattr(self, a) >= 1, f"{key}.{a}={getattr(self, a)} must be >= 1")


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """run.sharding_rules: the mesh axes each logical axis is split over (() = replicated). "batch" is
    the leading axis of the token batch; the others are the logical axes of ParamSpec.axes."""

    batch: tuple[str, ...] = ("data", "fsdp")
    vocab: tuple[str, ...] = ("tensor",)
    embed: tuple[str, ...] = ("fsdp",)
    heads: tuple[str, ...] = ("tensor",)
    mlp: tuple[str, ...] = ("tensor",)
    window_embed: tuple[str, ...] = ("fsdp",)
    layers: tuple[str, ...] = ()

    def check(self, key: str = "run.sharding_rules") -> None:
        for f in dataclasses.fields(self):
            axes = getattr(self, f.name)
            for a in axes:
                require(a in MESH_AXES, f"{key}.{f.name}={list(axes)}: {a!r} is not a mesh axis "
                        f"({', '.join(MESH_AXES)})")
            require(len(set(axes)) == len(axes), f"{key}.{f.name}={list(axes)} names a mesh axis twice")

    def table(self) -> tuple[tuple[str, Any], ...]:
        """The rules in flax's form: ((logical name, mesh axes or None), ...)."""
        return tuple((f.name, tuple(getattr(self, f.name)) or None) for f in dataclasses.fields(self))


def mesh_axes_of(entry: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The mesh axes of one PartitionSpec entry (None, an axis name, or a tuple of them)."""
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def partition_spec(axes: tuple[str | None, ...], shape: tuple[int, ...], rules: ShardingRules,
                   mesh: MeshShape) -> PartitionSpec:
    """The PartitionSpec of an array with logical `axes` and `shape` (module docstring)."""
    seen: set[str] = set()
    names = []
    for a in axes:  # flax refuses a repeated name: shard its first dimension only
        names.append(None if a in seen else a)
        seen.add(a)
    spec = nn.logical_to_mesh_axes(names, rules.table())
    entries = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        group = mesh_axes_of(entry)
        entries.append(entry if group and dim % mesh.axis_size(group) == 0 else None)
    return PartitionSpec(*entries)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A mesh and the rules that place every array of a run on it."""

    shape: MeshShape
    rules: ShardingRules
    mesh: jax.sharding.Mesh

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def param_spec(self, spec: ParamSpec) -> PartitionSpec:
        return partition_spec(spec.axes, spec.shape, self.rules, self.shape)

    def compute_spec(self, spec: ParamSpec) -> PartitionSpec:
        """A parameter's layout where it is used: param_spec without the batch rule's mesh axes (FSDP's
        all-gather before use, ZeRO-3; tensor-axis splits stay). The whole stack of a leaf is gathered at
        once, so a device holds a full copy of the weights during the step; gathering block by block
        would need sharding constraints on the activations inside the model."""
        batch = set(self.rules.batch)
        keep = []
        for entry in self.param_spec(spec):
            rest = tuple(a for a in mesh_axes_of(entry) if a not in batch)
            keep.append(None if not rest else rest[0] if len(rest) == 1 else rest)
        return PartitionSpec(*keep)

    def gather_for_compute(self, params: Any, specs: Any) -> Any:
        gather = lambda s, p: jax.lax.with_sharding_constraint(p, NamedSharding(self.mesh, self.compute_spec(s)))  # noqa: E731
        return tree_map_specs(gather, specs, params)

    def param_shardings(self, specs: Any) -> Any:
        return tree_map_specs(lambda s: NamedSharding(self.mesh, self.param_spec(s)), specs)

    def batch_sharding(self, shape: tuple[int, ...], axis: int = 0) -> NamedSharding:
        """Axis `axis` of an array of `shape` over the batch rule's mesh axes (replicated when they do not
        divide it, as for a validation chunk of odd size)."""
        names: list[str | None] = [None] * len(shape)
        names[axis] = "batch"
        return NamedSharding(self.mesh, partition_spec(tuple(names), tuple(shape), self.rules, self.shape))

    @staticmethod
    def put(host: Any, sharding: NamedSharding) -> jax.Array:
        """A global array from a host value that every process holds whole (a batch is a pure function of
        seed and step; hyperparameters and seeds are in the config): each process materialises only its
        own devices' slices. jax.device_put cannot place a host value across processes."""
        host = np.asarray(host)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def state_shardings(self, state: Any, specs: Any) -> Any:
        """Shardings of a tree (params and optimizer state): a leaf whose key path ends with a parameter's
        path and has its shape is sharded like that parameter; every other leaf is replicated."""
        flat, _ = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)
        by_path = {path_keys(p): s for p, s in flat}

        def sharding(path, leaf):
            keys = path_keys(path)
            for k in range(len(keys)):
                s = by_path.get(keys[k:])
                if s is not None and tuple(getattr(leaf, "shape", ())) == tuple(s.shape):
                    return NamedSharding(self.mesh, self.param_spec(s))
            return self.replicated

        return jax.tree_util.tree_map_with_path(sharding, state)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """The mesh of jit tracing and of PartitionSpec constraints, and the layout `per_matrix` reads."""
        token = _ACTIVE.set(self)
        try:
            with jax.set_mesh(self.mesh):
                yield
        finally:
            _ACTIVE.reset(token)


def layout_of(run) -> Layout | None:
    """The layout of a RunConfig (None for a one-device mesh: the unsharded program). The mesh takes the
    first run.mesh.size devices of jax.devices(), which spans every host in a multi-host job."""
    shape, rules = run.mesh, run.sharding_rules
    if shape.size == 1:
        return None
    devices = jax.devices()
    if shape.size > len(devices):
        raise ConfigError(f"run.mesh={dataclasses.asdict(shape)} needs {shape.size} devices; "
                          f"this process sees {len(devices)} ({devices[0].platform})")
    mesh = jax.make_mesh((shape.data, shape.fsdp, shape.tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                         devices=devices[:shape.size])
    return Layout(shape, rules, mesh)


_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("scaling_sharding_layout", default=None)


def active() -> Layout | None:
    """The layout of the program being traced (Layout.activate), or None on one device."""
    return _ACTIVE.get()


def per_matrix(fn: Callable[[jax.Array], jax.Array], specs: Any, tree: Any,
               select: Callable[[ParamSpec], bool] = lambda s: True) -> Any:
    """fn on every matrix of the selected leaves of `tree` (fn is batched over leading axes and acts on the
    last two; it must be orientation-equivariant: fn(xᵀ) = fn(x)ᵀ, as polar factors are). Unselected and
    optax-masked leaves come back as they are. Without an active layout: fn per leaf, as written. With
    one: the owner schedule of the module docstring, on whole matrices."""
    layout = active()
    take = lambda s, x: not isinstance(x, optax.MaskedNode) and s.is_matrix and select(s)  # noqa: E731
    if layout is None:
        return tree_map_specs(lambda s, x: fn(x) if take(s, x) else x, specs, tree)
    flat_specs, treedef = jax.tree_util.tree_flatten(specs, is_leaf=is_spec)
    flat = treedef.flatten_up_to(tree)
    groups: dict[tuple[int, int, Any], list[int]] = {}  # (short side, long side, dtype) -> leaf indices
    for i, (s, x) in enumerate(zip(flat_specs, flat)):
        if take(s, x):
            groups.setdefault((min(s.fan_in, s.fan_out), max(s.fan_in, s.fan_out), x.dtype), []).append(i)
    devices = layout.mesh.size
    owners = PartitionSpec(MESH_AXES, None, None)
    out = list(flat)
    for (m, n, _), members in groups.items():
        # The stack is built and taken apart in one layout, its first member's (wide orientation): concat and
        # slices along the unsharded stack axis are then local, and only the two owner constraints move data.
        first = flat_specs[members[0]]
        a, b = (tuple(layout.param_spec(first)) + (None, None))[len(first.shape) - 2:len(first.shape)]
        stacked = PartitionSpec(None, *((a, b) if first.fan_in <= first.fan_out else (b, a)))
        wide = []  # every matrix in the (m, n) orientation, m <= n
        for i in members:
            s = flat_specs[i]
            x = flat[i].reshape((s.n_stacked, s.fan_in, s.fan_out))
            x = x if s.fan_in <= s.fan_out else jnp.swapaxes(x, -1, -2)
            wide.append(jax.lax.with_sharding_constraint(x, stacked))
        pad = -sum(x.shape[0] for x in wide) % devices
        if pad:  # zero matrices keep the stack divisible; they map to zero and are dropped
            wide.append(jax.lax.with_sharding_constraint(jnp.zeros((pad, m, n), wide[0].dtype), stacked))
        stack_SxMxN = jax.lax.with_sharding_constraint(jnp.concatenate(wide, axis=0), owners)  # to the owners
        result_SxMxN = jax.lax.with_sharding_constraint(fn(stack_SxMxN), owners)
        result_SxMxN = jax.lax.with_sharding_constraint(result_SxMxN, stacked)  # back from the owners
        start = 0
        for i in members:
            s = flat_specs[i]
            y = result_SxMxN[start:start + s.n_stacked]
            start += s.n_stacked
            y = y if s.fan_in <= s.fan_out else jnp.swapaxes(y, -1, -2)
            out[i] = jax.lax.with_sharding_constraint(y.reshape(s.shape), layout.param_spec(s))
    return jax.tree_util.tree_unflatten(treedef, out)


_COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "reduce-scatter", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(_COLLECTIVES) + r")(-start)?\((.*?)\)(?:,|$)")


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes per device that a compiled SPMD program's collectives send, by kind: the operand sizes of
    every all-gather, all-reduce, all-to-all, reduce-scatter and collective-permute (async -start forms
    counted once, -done forms not at all) in the HLO of `jax.jit(f).lower(...).compile().as_text()`,
    whose shapes are per-device. Collectives inside a loop body count once, not per iteration."""
    totals = {k: 0 for k in _COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if match is None:
            continue
        result_type, kind, _, operands = match.groups()
        arrays = _ARRAY.findall(operands) or _ARRAY.findall(result_type)  # operands typed inline, else the result
        for dtype, dims in arrays:
            size = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            totals[kind] += size * _DTYPE_BYTES.get(dtype, 4)
    return totals

"""Parametrizations: init scale, forward multipliers and per-leaf lr multipliers, read from specs.

- sp: the base model. Hidden/output std `init_std` (or 1/sqrt(fan_in) when 0), embedding std
  `embed_std`, one global lr.
- mup: Tensor Programs V (Yang et al., arXiv 2203.03466), Table 3 form (microsoft/mup):
  with m = fan_in / fan_in_base, hidden std sigma/sqrt(m), output std
  sigma/m (or 0), Adam lr hidden and output / m; SGD column embedding and vectors * fan_out ratio,
  output / m; attention logits sqrt(d_head_base)/d_head; tied embeddings use the Table 8 logits
  multiplier 1/m instead. Every factor is a ratio to the base, so at the base width muP == SP exactly.
- spectral: Yang, Simon, Bernstein (arXiv 2310.17813) Condition 1: hidden semi-orthogonal init times
  sqrt(fan_out/fan_in) (rms->rms norm 1), embedding rows of RMS `embed_std`, output columns of norm
  1/sqrt(fan_in) (rms->inf norm 1, Filatov et al. arXiv 2510.03871 §3); Adam lr rule 1/fan_in relative
  to the base.
Optimizers whose hidden update is orthogonalised (Muon, Scion, manifold Muon) already meet the
spectral condition, so their hidden multiplier stays 1 (Moonlight's RMS-matched factor needs
1/sqrt(m)); Scion's LMOs carry the width scaling for every role, so all its multipliers are 1.
- scion: Scion's boundary init (Pethick et al., arXiv 2502.07529): every matrix starts on the sphere of its
  role's norm and radius (optim.norms, optim.radius; scaling.optim.lmo.boundary_init), whatever the optimizer.
The free per-role multipliers `param.lr_mult` multiply on top of every rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from scaling import optim as optimizers
from scaling.optim.lmo import boundary_init
from scaling.optim.muon import MuonConfig
from scaling.optim.scion import ScionConfig
from scaling.specs import ROLES, Multipliers, ParamSpec, tree_map_specs

if TYPE_CHECKING:  # scaling.config validates param.kind against KINDS
    from scaling.config import ModelConfig, OptimConfig, ParamConfig

KINDS = ("sp", "mup", "spectral", "scion")  # param.kind: the parametrizations of this module's docstring

def base_model_config(model: ModelConfig, param: ParamConfig) -> ModelConfig:
    """The model at the base width (heads rescaled when the head dimension is pinned)."""
    base = param.base_width or model.width
    if base == model.width:
        return model
    n_heads = model.n_heads
    if model.head_dim:
        n_heads = max(1, round(model.n_heads * base / model.width))
    return dataclasses.replace(model, width=base, n_heads=n_heads)


def attach_base(specs: Any, base_specs: Any) -> Any:
    """Record the base model's fan_in/fan_out on every spec (mup's set_base_shapes)."""
    return tree_map_specs(lambda s, b: dataclasses.replace(s, fan_in_base=b.fan_in, fan_out_base=b.fan_out),
                          specs, base_specs)


# ----------------------------------------------------------------------------- init


def _normal(key, shape, std):
    return std * jax.random.normal(key, shape, jnp.float32)


def _semi_orthogonal(key, shape):
    """Independent semi-orthogonal (fan_in, fan_out) matrices for every leading (stacked) index."""
    fan_in, fan_out = shape[-2:]
    lead = shape[:-2]
    n = math.prod(lead)
    keys = jax.random.split(key, n)
    init = jax.nn.initializers.orthogonal(scale=1.0, column_axis=-1)
    mats = jax.vmap(lambda k: init(k, (fan_in, fan_out), jnp.float32))(keys)
    return mats.reshape(shape)


def _normalise(x, axis, target_norm):
    return x * (target_norm / jnp.linalg.norm(x, axis=axis, keepdims=True))


def init_leaf(spec: ParamSpec, key: jax.Array, param: ParamConfig, residual_scale: float = 1.0) -> jax.Array:
    """One leaf's initial value; `residual_scale` multiplies matrices that write into the residual stream."""
    shape = spec.shape
    if spec.role == "vector":
        return jnp.full(shape, spec.const_init if spec.const_init is not None else 0.0, jnp.float32)
    residual = residual_scale if spec.residual_out else 1.0
    m = spec.width_mult_in
    if param.kind == "spectral":
        if spec.role == "hidden":
            return _semi_orthogonal(key, shape) * math.sqrt(spec.fan_out / spec.fan_in) * residual
        if spec.role == "embedding":  # token rows of RMS embed_std
            return _normalise(jax.random.normal(key, shape), -1, param.embed_std * math.sqrt(spec.fan_out))
        if param.output_zero_init:
            return jnp.zeros(shape, jnp.float32)
        return _normalise(jax.random.normal(key, shape), -2, 1.0 / math.sqrt(spec.fan_in))
    if spec.role == "embedding":
        return _normal(key, shape, param.embed_std)
    base_std = param.init_std or 1.0 / math.sqrt(spec.fan_in_base or spec.fan_in)
    if spec.role == "hidden":
        std = base_std / math.sqrt(m) if param.kind == "mup" else (param.init_std or 1.0 / math.sqrt(spec.fan_in))
        return _normal(key, shape, std * residual)
    # output
    if param.output_zero_init:
        return jnp.zeros(shape, jnp.float32)
    std = base_std / m if param.kind == "mup" else (param.init_std or 1.0 / math.sqrt(spec.fan_in))
    return _normal(key, shape, std)


def residual_scale(model: ModelConfig) -> float:
    """1/sqrt(2L) on residual-output projections with `model.residual_out_init` (GPT-2, Radford et al.
    2019; Filatov et al. arXiv 2510.03871 §3), else 1."""
    return 1.0 / math.sqrt(2 * model.depth) if model.residual_out_init else 1.0


def init_params(specs: Any, key: jax.Array, param: ParamConfig, model: ModelConfig,
                optim: OptimConfig | None = None) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(specs)
    keys = jax.random.split(key, len(leaves))
    scale = residual_scale(model)
    if param.kind == "scion":
        optim = optim or ScionConfig()
        arrays = [boundary_init(s, k, optim.norms.get(s.role), optim.radius.get(s.role))
                  * (scale if s.residual_out else 1.0) for s, k in zip(leaves, keys)]
    else:
        arrays = [init_leaf(s, k, param, scale) for s, k in zip(leaves, keys)]
    project = optimizers.row(optim).init_hidden if optim is not None else None
    if project is not None:  # e.g. manifold Muon starts on its manifold
        arrays = [project(a) if s.role == "hidden" else a for s, a in zip(leaves, arrays)]
    return jax.tree_util.tree_unflatten(treedef, arrays)


# ----------------------------------------------------------------------------- learning rates


# the scalars of the param section fed to the compiled step as inputs (scaling.hyper); every other field
# (kind, base_width, init scales) is static or read only at initialisation
HYPERPARAMETERS = tuple(f"lr_mult.{r}" for r in ROLES)


def lr_multiplier(spec: ParamSpec, param: ParamConfig, optim: OptimConfig, lr_mult: dict | None = None) -> Any:
    """Per-leaf multiplier of the optimizer's base lr (the rule times the free multiplier of the role:
    lr_mult["lr_mult.<role>"], a runtime input, default param.lr_mult)."""
    free = param.lr_mult.get(spec.role) if lr_mult is None else lr_mult[f"lr_mult.{spec.role}"]
    rule_column = optimizers.row(optim).lr_rule
    if param.kind == "sp" or rule_column == "lmo":
        return free
    m_in, m_out = spec.width_mult_in, spec.width_mult_out
    role = spec.role
    if role == "hidden" and rule_column == "orthogonal":
        moonlight = isinstance(optim, MuonConfig) and optim.shape_scale == "moonlight"
        return free / math.sqrt(m_in) if moonlight else free
    if rule_column == "sgd":  # muP SGD column (Table 3); spectral's SGD rule fan_out/fan_in agrees
        rule = {"embedding": m_out, "vector": m_out, "hidden": 1.0, "output": 1.0 / m_in}[role]
        return free * rule
    # Adam column (Adam, AdamW, Lion, Tiger and the AdamW fallbacks): hidden and output lr / m.
    return free * (1.0 / m_in if role in ("hidden", "output") else 1.0)


def lr_multipliers(specs: Any, param: ParamConfig, optim: OptimConfig, lr_mult: dict | None = None) -> Any:
    return tree_map_specs(lambda s: lr_multiplier(s, param, optim, lr_mult), specs)


# ----------------------------------------------------------------------------- forward


def forward_multipliers(model: ModelConfig, param: ParamConfig) -> Multipliers:
    base = base_model_config(model, param)
    if model.kind != "transformer":
        attn = 1.0
    elif model.attn_scale == "inverse":
        attn = 1.0 / model.d_head
    elif param.kind == "mup":  # alpha/d_head with alpha = sqrt(d_head_base): SP at the base
        attn = math.sqrt(base.d_head) / model.d_head
    else:
        attn = 1.0 / math.sqrt(model.d_head)
    output = 1.0
    if param.kind == "mup" and model.tie_embeddings:  # Table 8 readout multiplier 1/m
        output = base.width / model.width
    return Multipliers(attn=attn, output=output)

"""Functional models: `init(cfg, key, param) -> (params, specs)`, `apply(cfg, params, tokens, param=...)`.

Two kinds share one contract: a Llama-style transformer and a small MLP language model. Each model
module declares `param_specs(cfg)` (shapes and roles only); values come from the parametrization,
which reads nothing but the specs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from scaling import parametrization
from scaling.models import mlp, transformer
from scaling.specs import ParamSpec

if TYPE_CHECKING:  # scaling.config validates model.kind against MODELS
    from scaling.config import ModelConfig, OptimConfig, ParamConfig

MODELS = {"transformer": transformer, "mlp": mlp}  # model.kind -> its module: the one list of model kinds


def _param(param: ParamConfig | None) -> ParamConfig:
    from scaling.config import ParamConfig  # the default parametrization (sp)

    return ParamConfig() if param is None else param


def param_specs(cfg: ModelConfig, param: ParamConfig | None = None) -> dict:
    """Specs with the base model's fan_in/fan_out attached (for muP width ratios)."""
    module = MODELS[cfg.kind]
    specs = module.param_specs(cfg)
    base = parametrization.base_model_config(cfg, _param(param))
    return parametrization.attach_base(specs, module.param_specs(base))


def init(cfg: ModelConfig, key: jax.Array, param: ParamConfig | None = None,
         optim: OptimConfig | None = None) -> tuple[dict, dict]:
    param = _param(param)
    specs = param_specs(cfg, param)
    return parametrization.init_params(specs, key, param, cfg, optim), specs


def apply(cfg: ModelConfig, params: dict, tokens_BxT: jax.Array, *, param: ParamConfig | None = None,
          compute_dtype=None, return_activations: bool = False):
    mult = parametrization.forward_multipliers(cfg, _param(param))
    return MODELS[cfg.kind].apply(cfg, params, tokens_BxT, mult, compute_dtype=compute_dtype,
                                  return_activations=return_activations)


def loss_fn(cfg: ModelConfig, params: dict, tokens_BxT1: jax.Array, *, param: ParamConfig | None = None,
            compute_dtype=None) -> jax.Array:
    """Mean next-token cross-entropy (nats) of a (B, T+1) token batch."""
    logits_BxTxV = apply(cfg, params, tokens_BxT1[:, :-1], param=param, compute_dtype=compute_dtype)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    nll_BxT = -jnp.take_along_axis(logp_BxTxV, tokens_BxT1[:, 1:, None], axis=-1)[..., 0]
    return jnp.mean(nll_BxT)


def count_params(specs: Any) -> dict:
    leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, ParamSpec))
    total = sum(math.prod(s.shape) for s in leaves)
    embedding = sum(math.prod(s.shape) for s in leaves if s.role == "embedding")
    matmul = sum(math.prod(s.shape) for s in leaves if s.role in ("hidden", "output"))
    return {"n_params": total, "n_params_nonembedding": total - embedding, "n_params_matmul": matmul}


def flops_per_token(cfg: ModelConfig, specs: Any) -> float:
    """Training FLOPs per token (forward + backward), counting matmuls; tied readouts count once more."""
    n = count_params(specs)["n_params_matmul"]
    if cfg.tie_embeddings:
        n += cfg.vocab_size * cfg.width
    return MODELS[cfg.kind].count_flops_per_token(cfg, n)

"""A small MLP language model for fast parametrization studies (Bengio et al. 2003 style).

Each position sees the embeddings of its last `window` tokens (zero-padded at the start),
concatenated, then `depth` GELU layers of width `width`, then the readout. Causal by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from scaling.models.layers import cast, embed_tokens, matrix_spec
from scaling.specs import Multipliers

if TYPE_CHECKING:
    from scaling.config import ModelConfig


def param_specs(cfg: ModelConfig) -> dict:
    D, V, W = cfg.width, cfg.vocab_size, cfg.window
    specs = {
        "embed": matrix_spec((V, D), "embedding", ("vocab", "embed"), tied_output=cfg.tie_embeddings),
        "w_first": matrix_spec((W * D, D), "hidden", ("window_embed", "mlp")),
    }
    if cfg.depth > 1:
        specs["w_hidden"] = matrix_spec((cfg.depth - 1, D, D), "hidden", ("layers", "mlp", "mlp"))
    if not cfg.tie_embeddings:
        specs["unembed"] = matrix_spec((D, V), "output", ("embed", "vocab"))
    return specs


def apply(cfg: ModelConfig, params: dict, tokens_BxT: jax.Array, mult: Multipliers, *,
          compute_dtype=None, return_activations: bool = False):
    B, T = tokens_BxT.shape
    e_BxTxD = cast(embed_tokens(params["embed"], tokens_BxT), compute_dtype)
    # Window of previous embeddings: position t sees tokens t-W+1 .. t.
    padded_BxTpxD = jnp.pad(e_BxTxD, ((0, 0), (cfg.window - 1, 0), (0, 0)))
    ctx_BxTxWD = jnp.concatenate([padded_BxTpxD[:, i:i + T] for i in range(cfg.window)], axis=-1)
    z_BxTxD = ctx_BxTxWD @ cast(params["w_first"], compute_dtype)
    h_BxTxD = jax.nn.gelu(z_BxTxD, approximate=True)
    acts = {"embedding": e_BxTxD, "pre_0": z_BxTxD, "hidden_0": h_BxTxD}  # pre_i: before the GELU
    if cfg.depth > 1:
        def layer(h, w):
            z = h @ cast(w, compute_dtype)
            h = jax.nn.gelu(z, approximate=True)
            return h, ((z, h) if return_activations else None)  # stack per-layer values only when asked

        h_BxTxD, stacked = jax.lax.scan(layer, h_BxTxD, params["w_hidden"])
        if return_activations:
            for i in range(cfg.depth - 1):
                acts[f"pre_{i + 1}"] = stacked[0][i]
                acts[f"hidden_{i + 1}"] = stacked[1][i]
    out_DxV = params["embed"].T if cfg.tie_embeddings else params["unembed"]
    logits_BxTxV = (h_BxTxD @ cast(out_DxV, compute_dtype)).astype(jnp.float32) * mult.output
    if not return_activations:
        return logits_BxTxV
    acts["logits"] = logits_BxTxV
    return logits_BxTxV, acts


def count_flops_per_token(cfg: ModelConfig, n_matmul_params: int) -> float:
    return 6.0 * n_matmul_params

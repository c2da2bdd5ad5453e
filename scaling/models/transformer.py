"""A Llama-style decoder-only transformer as pure functions over a dict of stacked parameters.

Block parameters are stacked along a leading L axis (one batched matrix per kind, which Muon and
Scion orthogonalise per layer); the blocks run unrolled, or under `lax.scan` with
`model.scan_layers` (fast compiles for deep models); `model.remat` wraps each block in `jax.checkpoint`
(activation memory of one block instead of all, for a second forward pass in the backward). Pre-norm RMSNorm, RoPE, causal multi-head attention, SwiGLU or GELU MLP, no biases.
`norm_everywhere` adds a parameter-free RMSNorm before every linear layer (QK-norm, V-norm, O-norm,
MLP-norm), as in Filatov et al., "Optimal Scaling Needs Optimal Norm" (arXiv 2510.03871) §3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from scaling.models.layers import (apply_rope, attention_logits, cast, causal_attention, embed_tokens, matrix_spec,
                                   rms_norm, rope_tables, vector_spec)
from scaling.specs import Multipliers

if TYPE_CHECKING:
    from scaling.config import ModelConfig


def param_specs(cfg: ModelConfig) -> dict:
    D, L, V, F = cfg.width, cfg.depth, cfg.vocab_size, cfg.d_ff
    HK = cfg.n_heads * cfg.d_head
    gains = cfg.norm_gain
    blocks = {
        "wq": matrix_spec((L, D, HK), "hidden", ("layers", "embed", "heads")),
        "wk": matrix_spec((L, D, HK), "hidden", ("layers", "embed", "heads")),
        "wv": matrix_spec((L, D, HK), "hidden", ("layers", "embed", "heads")),
        "wo": matrix_spec((L, HK, D), "hidden", ("layers", "heads", "embed"), residual_out=True),
        "w_out": matrix_spec((L, F, D), "hidden", ("layers", "mlp", "embed"), residual_out=True),
    }
    if cfg.mlp == "swiglu":
        blocks["w_gate"] = matrix_spec((L, D, F), "hidden", ("layers", "embed", "mlp"))
        blocks["w_up"] = matrix_spec((L, D, F), "hidden", ("layers", "embed", "mlp"))
    else:
        blocks["w_up"] = matrix_spec((L, D, F), "hidden", ("layers", "embed", "mlp"))
    if gains:
        blocks["attn_gain"] = vector_spec((L, D), ("layers", "embed"), 1.0)
        blocks["mlp_gain"] = vector_spec((L, D), ("layers", "embed"), 1.0)
    specs = {"embed": matrix_spec((V, D), "embedding", ("vocab", "embed"), tied_output=cfg.tie_embeddings), "blocks": blocks}
    if gains:
        specs["final_gain"] = vector_spec((D,), ("embed",), 1.0)
    if not cfg.tie_embeddings:
        specs["unembed"] = matrix_spec((D, V), "output", ("embed", "vocab"))
    return specs


def apply(cfg: ModelConfig, params: dict, tokens_BxT: jax.Array, mult: Multipliers, *,
          compute_dtype=None, return_activations: bool = False):
    """Logits (B, T, V) in float32; with return_activations also a dict of per-layer activations.
    With compute_dtype (bfloat16) the matmuls and the residual stream run in it while the parameters stay
    float32 (cast at each use: float32 master weights) and RMSNorm statistics, attention logits and
    softmax, and the logits are float32."""
    B, T = tokens_BxT.shape
    H, K, eps = cfg.n_heads, cfg.d_head, cfg.norm_eps
    extra_norm = cfg.norm_everywhere
    cos_TxK2, sin_TxK2 = rope_tables(T, K, cfg.rope_theta)

    def dense(x_BxTxI, w_IxO):
        """x @ w as one 2-D matmul (B*T rows): the weight gradient is then a single plain matmul."""
        y = x_BxTxI.reshape(B * T, x_BxTxI.shape[-1]) @ cast(w_IxO, compute_dtype)
        return y.reshape(B, T, w_IxO.shape[-1])

    def maybe_norm(x):
        return rms_norm(x, None, eps) if extra_norm else x

    def block(x_BxTxD, p):
        gain = (lambda name: p[name]) if cfg.norm_gain else (lambda name: None)
        h_BxTxD = rms_norm(x_BxTxD, gain("attn_gain"), eps)
        q_BxTxHxK = dense(h_BxTxD, p["wq"]).reshape(B, T, H, K)
        k_BxTxHxK = dense(h_BxTxD, p["wk"]).reshape(B, T, H, K)
        v_BxTxHxK = dense(h_BxTxD, p["wv"]).reshape(B, T, H, K)
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = maybe_norm(q_BxTxHxK), maybe_norm(k_BxTxHxK), maybe_norm(v_BxTxHxK)
        q_BxTxHxK = apply_rope(q_BxTxHxK, cos_TxK2, sin_TxK2)
        k_BxTxHxK = apply_rope(k_BxTxHxK, cos_TxK2, sin_TxK2)
        # Head-major layout: batch dims lead, so XLA:CPU emits plain batched matmuls (faster backward).
        q_BxHxTxK, k_BxHxTxK, v_BxHxTxK = (a.transpose(0, 2, 1, 3) for a in (q_BxTxHxK, k_BxTxHxK, v_BxTxHxK))
        att_BxHxTxK = causal_attention(q_BxHxTxK, k_BxHxTxK, v_BxHxTxK, mult.attn)
        att_BxTxHK = att_BxHxTxK.transpose(0, 2, 1, 3).reshape(B, T, H * K)
        x_BxTxD = x_BxTxD + dense(maybe_norm(att_BxTxHK), p["wo"])

        h_BxTxD = rms_norm(x_BxTxD, gain("mlp_gain"), eps)
        if cfg.mlp == "swiglu":
            f_BxTxF = jax.nn.silu(dense(h_BxTxD, p["w_gate"])) * dense(h_BxTxD, p["w_up"])
        else:
            # tanh GELU: the exact erf form is several times slower on XLA:CPU.
            f_BxTxF = jax.nn.gelu(dense(h_BxTxD, p["w_up"]), approximate=True)
        x_BxTxD = x_BxTxD + dense(maybe_norm(f_BxTxF), p["w_out"])
        acts = ({"block_out": x_BxTxD, "attn_logits": attention_logits(q_BxHxTxK, k_BxHxTxK, mult.attn)}
                if return_activations else None)
        return x_BxTxD, acts

    if cfg.remat:  # keep only each block's input; its activations are recomputed in the backward pass
        block = jax.checkpoint(block)
    x_BxTxD = cast(embed_tokens(params["embed"], tokens_BxT), compute_dtype)
    emb_BxTxD = x_BxTxD
    if cfg.scan_layers:  # one compiled block: fast compiles for deep models
        x_BxTxD, layer_acts = jax.lax.scan(block, x_BxTxD, params["blocks"])
    else:  # unrolled: on XLA:CPU the backward pass of a scan is about 2x slower
        outs = []
        for i in range(cfg.depth):
            x_BxTxD, a = block(x_BxTxD, jax.tree_util.tree_map(lambda w: w[i], params["blocks"]))
            outs.append(a)
        layer_acts = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs) if return_activations else None
    h_BxTxD = rms_norm(x_BxTxD, params.get("final_gain") if cfg.norm_gain else None, eps)
    out_DxV = params["embed"].T if cfg.tie_embeddings else params["unembed"]
    logits_BxTxV = dense(h_BxTxD, out_DxV).astype(jnp.float32) * mult.output
    if not return_activations:
        return logits_BxTxV
    acts = {"embedding": emb_BxTxD, "logits": logits_BxTxV}
    for i in range(cfg.depth):
        acts[f"block_{i}"] = layer_acts["block_out"][i]
        acts[f"attn_logits_{i}"] = layer_acts["attn_logits"][i]
    return logits_BxTxV, acts


def count_flops_per_token(cfg: ModelConfig, n_matmul_params: int) -> float:
    """Training FLOPs per token: 6 per matmul parameter plus attention's 6·L·T·(H·K)
    (Kaplan et al. 2020, Table 1, forward 2N + 2·L·T·d_attn, times 3 for training; no causal halving)."""
    return 6.0 * n_matmul_params + 6.0 * cfg.depth * cfg.context * cfg.n_heads * cfg.d_head

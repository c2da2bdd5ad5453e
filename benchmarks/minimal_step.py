"""A minimal hand-written JAX train step of the reference transformer, to price our step's machinery.

The same model as scaling/models/transformer.py (pre-norm RMSNorm with gains, RoPE, causal multi-head
attention, GELU or SwiGLU MLP, untied readout, standard parametrization) written as one plain function of
jnp operations over our parameter dict, with attention left to autodiff, and AdamW from `optax.adamw`.
What it leaves out is what our `Program.step` adds: parameter specs and per-role lr multipliers, scalar
hyperparameters as program inputs (scaling.hyper), the schedule, the grad norm and the norm metrics
behind a `lax.cond`. `ratio()` times both alternately; ours / minimal time per step is the overhead
(target ≤ 1.10).

    .venv/bin/python -m benchmarks.minimal_step [--steps 20] [--rounds 5] [--set model.width=64 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import Config, load_config
from scaling.data import batch as make_batch
from scaling.data import load_dataset
from scaling.hyper import program_config
from scaling.program import Program

from benchmarks.train_throughput import step_timer


def minimal_loss(cfg: Config, params: dict, tokens_BxT1: jax.Array, compute_dtype=jnp.float32) -> jax.Array:
    """Mean next-token cross-entropy of our transformer (SP multipliers: attention 1/sqrt(K), output 1)."""
    m = cfg.model
    tokens_BxT, targets_BxT = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
    B, T = tokens_BxT.shape
    H, K, eps = m.n_heads, m.d_head, m.norm_eps
    inv_freq_K2 = 1.0 / (m.rope_theta ** (np.arange(0, K, 2, dtype=np.float32) / K))
    angles_TxK2 = np.arange(T, dtype=np.float32)[:, None] * inv_freq_K2[None]
    cos, sin = np.cos(angles_TxK2)[None, :, None], np.sin(angles_TxK2)[None, :, None]
    mask_1x1xTxT = np.tril(np.ones((T, T), bool))[None, None]

    def norm(x, g):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + eps)
        return (y if g is None else y * g[None, None]).astype(x.dtype)

    def rope(x_BxTxHxK):
        x1, x2 = x_BxTxHxK[..., : K // 2], x_BxTxHxK[..., K // 2:]
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxTxHxK.dtype)

    def mm(x, w):
        return x @ w.astype(compute_dtype)

    x_BxTxD = (jax.nn.one_hot(tokens_BxT, m.vocab_size) @ params["embed"]).astype(compute_dtype)
    for i in range(m.depth):
        p = jax.tree_util.tree_map(lambda w: w[i], params["blocks"])
        h = norm(x_BxTxD, p.get("attn_gain"))
        q, k, v = (mm(h, p[n]).reshape(B, T, H, K) for n in ("wq", "wk", "wv"))
        s_BxHxTxT = jnp.einsum("bqhk,bshk->bhqs", rope(q), rope(k), preferred_element_type=jnp.float32) / np.sqrt(K)
        probs = jax.nn.softmax(jnp.where(mask_1x1xTxT, s_BxHxTxT, -jnp.inf), -1).astype(compute_dtype)
        a_BxTxHK = jnp.einsum("bhqs,bshk->bqhk", probs, v).reshape(B, T, H * K)
        x_BxTxD = x_BxTxD + mm(a_BxTxHK, p["wo"])
        h = norm(x_BxTxD, p.get("mlp_gain"))
        if m.mlp == "swiglu":
            f = jax.nn.silu(mm(h, p["w_gate"])) * mm(h, p["w_up"])
        else:
            f = jax.nn.gelu(mm(h, p["w_up"]), approximate=True)
        x_BxTxD = x_BxTxD + mm(f, p["w_out"])
    logits_BxTxV = mm(norm(x_BxTxD, params.get("final_gain")), params["unembed"]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits_BxTxV, -1)
    return -jnp.mean(jnp.take_along_axis(logp, targets_BxT[..., None], -1))


def minimal_step_fn(cfg: Config):
    """(params, opt_state, tokens) -> (params, opt_state, loss), jitted with donation; and the optimizer."""
    o = cfg.optim
    def decay_mask(params):  # matrices, not gains (our default optim.decay_roles); blocks stack a layer axis
        return {k: (jax.tree_util.tree_map(lambda w: w.ndim == 3, v) if k == "blocks" else v.ndim == 2)
                for k, v in params.items()}

    tx = optax.adamw(o.lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask)
    dtype = jnp.bfloat16 if cfg.run.compute_dtype == "bfloat16" else jnp.float32

    def step(params, opt_state, tokens_BxT1):
        loss, grads = jax.value_and_grad(lambda p: minimal_loss(cfg, p, tokens_BxT1, dtype))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), tx


def runners(cfg: Config, tokens) -> dict:
    """Two timers `run(steps, offset) -> seconds` over the same batches: ours and the minimal step."""
    require_reference(cfg)
    program = Program(program_config(cfg))
    B, T = cfg.run.batch_size, cfg.model.context
    ours = {"s": program.init_state(jax.random.PRNGKey(0), cfg)}
    step, tx = minimal_step_fn(cfg)
    params = jax.tree_util.tree_map(jnp.copy, ours["s"].params)
    mine = {"p": params, "o": tx.init(params)}

    def run_minimal(steps: int, offset: int) -> float:
        batches = [make_batch(tokens, 0, offset + i, B, T + 1) for i in range(steps)]
        t0 = time.perf_counter()
        for b in batches:
            mine["p"], mine["o"], loss = step(mine["p"], mine["o"], b)
        jax.block_until_ready(loss)
        return time.perf_counter() - t0

    return {"ours": step_timer(program, cfg, ours, tokens), "minimal": run_minimal}


def require_reference(cfg: Config) -> None:
    """The minimal step implements one model: say so instead of timing a different one."""
    m = cfg.model
    ok = (m.kind == "transformer" and cfg.param.kind == "sp" and cfg.optim.name == "adamw" and m.norm_gain
          and not m.tie_embeddings and not m.norm_everywhere and m.attn_scale == "sqrt"
          and cfg.run.schedule == "constant" and cfg.run.grad_clip == 0
          and set(cfg.optim.decay_roles) == {"embedding", "hidden", "output"})
    if not ok:
        raise ValueError("the minimal step is the SP/AdamW untied transformer with gains and a constant lr")


def ratio(cfg: Config, steps: int = 20, rounds: int = 5) -> dict:
    """Median over paired rounds of (our step time / minimal step time); one untimed warm-up round each."""
    tokens = load_dataset(cfg.data, cfg.model.vocab_size).train
    run = runners(cfg, tokens)
    for r in run.values():
        r(2, 0)  # compile
        r(steps, 0)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "minimal": []}
    for i in range(rounds):
        order = list(run) if i % 2 == 0 else list(run)[::-1]
        for name in order:
            times[name].append(run[name](steps, 100 + i * steps))
    tokens_per_step = cfg.run.batch_size * cfg.model.context
    per_round = [a / b for a, b in zip(times["ours"], times["minimal"])]
    return {"ours_tok_s": round(steps * tokens_per_step / statistics.median(times["ours"])),
            "minimal_tok_s": round(steps * tokens_per_step / statistics.median(times["minimal"])),
            "ours_over_minimal_time": round(statistics.median(per_round), 3),
            "per_round": [round(x, 3) for x in per_round]}


def main() -> None:
    from benchmarks.train_throughput import REFERENCE

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    print(json.dumps(ratio(load_config(overrides=REFERENCE + args.set), args.steps, args.rounds)))


if __name__ == "__main__":
    main()

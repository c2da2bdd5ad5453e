"""Peak memory of our compiled train step (XLA's buffer assignment, `compiled.memory_analysis()`) vs an
estimate from parameters + optimizer state + gradients + saved activations, with and without `model.remat`.

    .venv/bin/python -m benchmarks.memory_bench [--set model.width=128 ...]

XLA reports argument, output, alias (donated state reused for the output) and temporary bytes; the peak of
one step is argument + output - alias + temp. The estimate counts float32 parameters, the optimizer's
state (its actual leaves), one gradient per parameter, and the activations the backward pass keeps per
token and layer for this transformer (scaling/models/transformer.py):

    4D (block input, its norm, the residual after attention, its norm) + 9HK (q, k, v before and after
    RoPE and in head-major layout, the attention output) + H*T (the softmax probabilities)
    + 2F (GELU: the up projection and its activation; SwiGLU 4F)

plus the final norm and the logits and their log-softmax (2D + 3V). With remat a block keeps only its
input (D per layer) and one block's activations are live at a time in the backward pass.
"""

from __future__ import annotations

import argparse
import json

MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")


def activation_floats_per_token(cfg) -> dict[str, float]:
    """Saved activations per token: per block (without remat) and outside the blocks."""
    m = cfg.model
    D, HK, F, T, V = m.width, m.n_heads * m.d_head, m.d_ff, m.context, m.vocab_size
    block = 4 * D + 9 * HK + m.n_heads * T + (4 if m.mlp == "swiglu" else 2) * F
    return {"block": block, "outside": 2 * D + 3 * V}


def estimate_bytes(cfg, n_params: int, opt_state_bytes: int) -> dict[str, int]:
    acts = activation_floats_per_token(cfg)
    tokens = cfg.run.batch_size * cfg.model.context
    per_float = 2 if cfg.run.compute_dtype == "bfloat16" else 4
    L = cfg.model.depth
    if cfg.model.remat:  # block inputs kept, one block recomputed at a time
        act = tokens * (L * cfg.model.width + acts["block"] + acts["outside"]) * per_float
    else:
        act = tokens * (L * acts["block"] + acts["outside"]) * per_float
    params = 4 * n_params
    return {"params": params, "opt_state": opt_state_bytes, "grads": params, "activations": int(act),
            "total": params + opt_state_bytes + params + int(act)}


def measure(overrides: list[str]) -> dict:
    """XLA's memory analysis of our compiled K = 1 train step next to the estimate (bytes)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.config import load_config
    from scaling.hyper import program_config
    from scaling.models import count_params
    from scaling.program import Program

    cfg = load_config(overrides=overrides)
    program = Program(program_config(cfg))
    state = jax.eval_shape(lambda: program.init_state(jax.random.PRNGKey(0), cfg))
    tokens = np.zeros((cfg.run.batch_size, cfg.model.context + 1), np.int32)
    compiled = program.compiled().step.lower(state, tokens, jnp.int32(0), False, program.hyper_values(cfg)).compile()
    ma = compiled.memory_analysis()
    xla = {k.removesuffix("_size_in_bytes"): int(getattr(ma, k)) for k in MEMORY_FIELDS}
    xla["peak"] = xla["argument"] + xla["output"] - xla["alias"] + xla["temp"]
    opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state.opt_state))
    est = estimate_bytes(cfg, count_params(program.specs)["n_params"], opt_bytes)
    return {"remat": cfg.model.remat, "xla": xla, "estimate": est,
            "peak_over_estimate": round(xla["peak"] / est["total"], 3),
            "temp_over_estimated_grads_plus_activations": round(xla["temp"] / (est["grads"] + est["activations"]), 3)}


def remat_pair(overrides: list[str]) -> dict:
    """The same step with and without `model.remat`: remat's temp bytes over the plain step's."""
    plain, remat = measure(overrides), measure(overrides + ["model.remat=true"])
    return {"plain": plain, "remat": remat,
            "remat_temp_over_plain": round(remat["xla"]["temp"] / plain["xla"]["temp"], 3)}


def main() -> None:
    from benchmarks.train_throughput import REFERENCE

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    print(json.dumps(remat_pair(REFERENCE + ["data.source=synthetic"] + args.set), indent=1))


if __name__ == "__main__":
    main()

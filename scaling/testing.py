"""Test and benchmark fixtures (the library never imports this module): a transformer-shaped parameter
tree with specs, for optimizer tests and benchmarks/optim_step_bench.py (no model code).

Leaves mirror a pre-norm transformer with stacked layers: embedding (V, d), stacked attention kernels
(L, d, d), MLP kernels (L, d, f) and (L, f, d), stacked gains (L, d), a final gain (d,), output (d, V).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scaling.specs import ParamSpec


def toy_specs(d: int = 16, layers: int = 2, vocab: int = 32, d_ff: int | None = None) -> dict:
    f = d_ff or 4 * d

    def hidden(fi, fo, res=False):
        return ParamSpec((layers, fi, fo), "hidden", fi, fo, ("layer", "in", "out"), residual_out=res)

    return {
        "embed": ParamSpec((vocab, d), "embedding", vocab, d, ("vocab", "embed")),
        "blocks": {
            "attn_norm": ParamSpec((layers, d), "vector", 1, d, ("layer", "embed"), const_init=1.0),
            "wq": hidden(d, d), "wk": hidden(d, d), "wv": hidden(d, d), "wo": hidden(d, d, True),
            "mlp_norm": ParamSpec((layers, d), "vector", 1, d, ("layer", "embed"), const_init=1.0),
            "w_in": hidden(d, f), "w_out": hidden(f, d, True),
        },
        "final_norm": ParamSpec((d,), "vector", 1, d, ("embed",), const_init=1.0),
        "unembed": ParamSpec((d, vocab), "output", d, vocab, ("embed", "vocab")),
    }


def toy_params(specs: dict, seed: int = 0) -> dict:
    """Gaussian matrices with std 1/sqrt(fan_in); vectors at their constant. (NumPy RNG: no compilation.)"""
    rng = np.random.default_rng(seed)

    def init(spec):
        if not spec.is_matrix:
            return jnp.full(spec.shape, spec.const_init or 0.0, jnp.float32)
        return jnp.asarray(rng.standard_normal(spec.shape, np.float32) / np.sqrt(spec.fan_in))

    return jax.tree_util.tree_map(init, specs, is_leaf=lambda x: isinstance(x, ParamSpec))


def toy_grads(params: dict, seed: int = 1, steps: int | None = None) -> dict:
    """Standard normal "gradients" like params, or a (steps, ...) sequence of them."""
    rng = np.random.default_rng(seed)
    lead = () if steps is None else (steps,)
    return jax.tree_util.tree_map(lambda p: jnp.asarray(rng.standard_normal(lead + p.shape, np.float32)), params)

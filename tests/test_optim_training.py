"""Every optimizer of the zoo trains the real (tiny) transformer on synthetic data: the validation loss
drops. (sgd is checked against optax.sgd in tests/test_optim_adamw.py instead.)

Uses scaling.models.init / loss_fn, scaling.data and scaling.parametrization's lr multipliers with a
30-step loop of its own (one compilation per optimizer: a lax.scan over precomputed batches).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling import data, models, parametrization
from scaling.config import DataConfig, ModelConfig, optim_config, ParamConfig, PerRole
from scaling.optim import build_optimizer

MODEL = ModelConfig(width=16, depth=1, n_heads=2, context=16, mlp_ratio=2.0)
STEPS, BATCH = 30, 8
DATASET = data.load_dataset(DataConfig(source="synthetic"), MODEL.vocab_size)
TRAIN = np.stack([data.batch(DATASET.train, 0, s, BATCH, MODEL.context + 1) for s in range(STEPS)])
VAL = data.batch(DATASET.val, 0, 0, 32, MODEL.context + 1, data.VAL)

# (optimizer config, parametrization): lrs picked by hand for a 30-step run; Scion starts from its
# boundary init (param.kind="scion"), manifold Muon from orthogonal hidden weights (param.kind="spectral").
RUNS = {
    "adamw": (optim_config(name="adamw", lr=1e-2, weight_decay=0.1), ParamConfig()),
    "lion": (optim_config(name="lion", lr=6e-3, weight_decay=0.3), ParamConfig()),
    "tiger": (optim_config(name="tiger", lr=6e-3, b1=0.965, embedding_fallback="lazy"), ParamConfig()),
    "muon": (optim_config(name="muon", lr=0.05, fallback_lr=1e-2, weight_decay=0.1), ParamConfig(kind="spectral")),
    "scion": (optim_config(name="scion", lr=0.1, constrained=True, radius=PerRole(hidden=2.0, output=10.0)),
              ParamConfig(kind="scion")),
    "manifold_muon": (optim_config(name="manifold_muon", lr=0.1, fallback_lr=1e-2, dual_steps=3),
                      ParamConfig(kind="spectral")),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_validation_loss_decreases(name):
    optim, param = RUNS[name]
    params, specs = models.init(MODEL, jax.random.PRNGKey(0), param, optim)
    tx = build_optimizer(optim, specs, parametrization.lr_multipliers(specs, param, optim), lambda t: 1.0)
    loss = lambda p, tokens: models.loss_fn(MODEL, p, tokens, param=param)  # noqa: E731

    @jax.jit
    def train(params, batches):
        def step(carry, tokens):
            p, s = carry
            g = jax.grad(loss)(p, tokens)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), batches)[0][0]

    before = float(jax.jit(loss)(params, VAL))
    after = float(jax.jit(loss)(train(params, jnp.asarray(TRAIN)), VAL))
    # below both the initial loss and the uniform guess ln(V) (Scion's boundary init starts above ln V)
    assert np.isfinite(after) and after < min(before, np.log(MODEL.vocab_size)) - 0.5, (name, before, after)

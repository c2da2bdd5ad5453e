"""Quickstart: does the learning rate transfer across width? SP versus muP on an MLP language model.

4 widths x 2 parametrizations x 7 learning rates = 56 short runs of a byte-level MLP LM on the embedded
Shakespeare text, AdamW at a constant learning rate. About 10 minutes on 2 CPU cores with 2 workers:

    scaling sweep run quickstart --store stores/quickstart --workers 2
    scaling analyze sweeps/experiments/quickstart.py --store stores/quickstart --out results/quickstart

Expected: under SP the optimal learning rate falls as the width grows; under muP (base width 32, so
muP equals SP at width 32) it stays put, and the fitted exponent b of lr*(width) = a * width^b has
a confidence interval containing 0.
"""

from sweeps.spec import axis, log2_grid, product, zip

BASE = {
    "model.kind": "mlp",
    "model.depth": 2,
    "model.context": 32,
    "model.window": 8,
    "optim.name": "adamw",
    "data.source": "shakespeare",
    "run.batch_size": 16,
    "run.steps": 300,
    "run.warmup_steps": 10,
    "run.log_every": 25,
    "run.norms_every": 100,
    "run.checkpoint_every": 100,
}

SWEEP = product(
    zip(axis("param.kind", ["sp", "mup"]), axis("param.base_width", [0, 32])),  # muP's base: width 32
    axis("model.width", [32, 64, 128, 256]),
    axis("optim.lr", log2_grid(8e-3, -3, 3, step=1)),  # 1e-3 ... 6.4e-2 in factors of 2
)

ANALYSIS = {"recipe": "lr_transfer", "x": "optim.lr", "width": "model.width", "kind": "param.kind"}

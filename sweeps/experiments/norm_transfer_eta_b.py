"""Norm transfer, study 1: learning rate x batch size at several horizons (Filatov et al., "Optimal Scaling
Needs Optimal Norm", arXiv 2510.03871, Figs. 1a, 2a, 3b, 7b), at byte-level Shakespeare scale.

The paper's setup, shrunk: a norm-everywhere transformer (parameter-free RMSNorm before every linear layer,
QK-norm), unconstrained Scion with momentum off (alpha = 1) and no weight decay, ColNorm -> Spectral ->
RowNorm (each vocabulary vector of the output step rescaled to l2 = 1/sqrt(d), so one step moves
||W_out||_{RMS->inf} by at most lr), radius 1, a constant learning rate without warmup, and their init:
spectral (hidden semi-orthogonal x sqrt(fan_out/fan_in), residual outputs x 1/sqrt(2L), output norm 1).

5 batch sizes (4 added after the first analysis found B* = 8, the smallest, at the short horizons) x 15
learning rates (factors of 2^0.5) = 75 constant-lr runs per seed, each trained for the same 2^20
tokens (a quarter of an epoch of the training plays); validation at every power-of-two step, so every batch size
is evaluated at the shared horizons 2^17 ... 2^20 tokens (8x). Two seeds (init and data order); seed 0 is
the default, so the first seed's run ids are those of the one-seed version of this file.

    scaling sweep run norm_transfer_eta_b --store stores/norm_transfer --workers 2
"""

from sweeps.spec import axis, derived, log2_grid, product, steps_for_tokens, zip

BASE = {
    "model.kind": "transformer",
    "model.width": 64,
    "model.depth": 2,
    "model.n_heads": 2,
    "model.context": 64,
    "model.norm_everywhere": True,
    "model.norm_gain": False,
    "model.residual_out_init": True,
    "param.kind": "spectral",
    "optim.name": "scion",
    "optim.alpha": 1.0,
    "optim.norms.output": "rownorm",
    "data.source": "shakespeare",
    "run.schedule": "constant",
    "run.eval_per_octave": 1,
    "run.log_every": 64,
    "run.checkpoint_every": 512,
    "tokens": 2 ** 20,
}

SWEEP = product(
    zip(axis("run.seed", [0, 1]), axis("run.data_seed", [0, 1])),
    axis("run.batch_size", [4, 8, 16, 32, 64]),
    axis("optim.lr", log2_grid(2 ** -4.5, -3.5, 3.5, step=0.5)),  # 2^-8 ... 2^-1
    derived("run.steps", steps_for_tokens()),
)

ANALYSIS = {"recipe": "norm_transfer", "lr": "optim.lr", "batch": "run.batch_size",
            "horizons": [2 ** 17, 2 ** 20]}  # the designed horizons; shorter ones are in the logs too

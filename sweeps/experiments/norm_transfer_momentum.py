"""Norm transfer, study 3a: with momentum the output norm is no longer ~ lr x steps (Filatov et al.,
"Optimal Scaling Needs Optimal Norm", arXiv 2510.03871; momentum as gradient averaging with alpha = 0.1,
the paper's convention).

Without momentum, a RowNorm output step moves ||W_out||_{RMS->inf} by about lr, so at a constant lr the norm
grows close to lr x steps and "one optimal norm" is nearly the statement lr* ~ B / D. Averaged gradients
change direction less from step to step, which breaks that proportionality: does the optimum still sit at
one norm? Study 1's grid of batch sizes and horizons with alpha = 0.1: 4 batch sizes x 12 learning rates
2^-6.5 ... 2^-1, 2^20 tokens each, horizons 2^17 ... 2^20 read from the constant-lr runs.

    scaling sweep run norm_transfer_momentum --store stores/norm_transfer_momentum --workers 2
"""

from sweeps.experiments.norm_transfer_eta_b import BASE as STUDY_1
from sweeps.spec import axis, derived, log2_grid, product, steps_for_tokens, zip

BASE = {**STUDY_1, "optim.alpha": 0.1}

SWEEP = product(
    zip(axis("run.seed", [0, 1]), axis("run.data_seed", [0, 1])),  # two seeds (init and data order)
    axis("run.batch_size", [8, 16, 32, 64]),
    axis("optim.lr", log2_grid(2 ** -4, -2.5, 3.0, step=0.5)),  # 2^-6.5 ... 2^-1
    derived("run.steps", steps_for_tokens()),
)

ANALYSIS = {"recipe": "norm_transfer", "lr": "optim.lr", "batch": "run.batch_size", "horizons": [2 ** 17, 2 ** 20]}

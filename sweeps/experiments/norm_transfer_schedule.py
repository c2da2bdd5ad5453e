"""Norm transfer, study 3b: a decaying learning rate, so the norm is no longer ~ lr x steps (Filatov et
al., "Optimal Scaling Needs Optimal Norm", arXiv 2510.03871, who also train with a decaying schedule).

Study 1's setup with a cosine decay to zero over each run: a horizon is a run's length, so each (B, D) is
its own run and only the final validation loss is a horizon. 4 batch sizes x 2 horizons (2^18 and 2^20
tokens) x 14 learning rates 2^-6 ... 2^0.5 (a decaying schedule moves the optimum up), two seeds. No
momentum (alpha = 1), as in study 1.

    scaling sweep run norm_transfer_schedule --store stores/norm_transfer_schedule --workers 2
"""

from sweeps.experiments.norm_transfer_eta_b import BASE as STUDY_1
from sweeps.spec import axis, derived, log2_grid, product, steps_for_tokens, zip

BASE = {**STUDY_1, "run.schedule": "cosine"}

SWEEP = product(
    zip(axis("run.seed", [0, 1]), axis("run.data_seed", [0, 1])),  # two seeds (init and data order)
    axis("tokens", [2 ** 18, 2 ** 20]),
    axis("run.batch_size", [8, 16, 32, 64]),
    axis("optim.lr", log2_grid(2 ** -3.5, -2.5, 4.0, step=0.5)),  # 2^-6 ... 2^0.5
    derived("run.steps", steps_for_tokens()),
)

ANALYSIS = {"recipe": "norm_transfer", "lr": "optim.lr", "batch": "run.batch_size"}

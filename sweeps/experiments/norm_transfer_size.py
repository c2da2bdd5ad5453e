"""Norm transfer, study 2: does the optimal output norm stay put across model size? (Filatov et al.,
"Optimal Scaling Needs Optimal Norm", arXiv 2510.03871, Claim 2: the optimal norm is the same across width
and depth.)

Study 1's setup (`norm_transfer_eta_b`) at one horizon, 2^19 tokens, and one batch size, 16 sequences (near
B* there): widths 32, 64, 128 (4x; head dimension 32) x depths 2 and 4, 10 learning rates 2^-5 ... 2^-0.5
in factors of 2^0.5. Constant lr, so the validation points at 2^17 and 2^18 tokens are horizons too.

    scaling sweep run norm_transfer_size --store stores/norm_transfer_size --workers 2
"""

from sweeps.experiments.norm_transfer_eta_b import BASE as STUDY_1
from sweeps.spec import axis, derived, log2_grid, product, steps_for_tokens, zip

BASE = {**STUDY_1, "run.batch_size": 16, "tokens": 2 ** 19}

SWEEP = product(
    zip(axis("run.seed", [0, 1]), axis("run.data_seed", [0, 1])),  # two seeds (init and data order)
    axis("model.width", [32, 64, 128]),
    derived("model.n_heads", lambda c: c["model.width"] // 32),
    axis("model.depth", [2, 4]),
    axis("optim.lr", log2_grid(2 ** -2.5, -2.5, 2.0, step=0.5)),
    derived("run.steps", steps_for_tokens()),
)

# lr* per width and depth (is the lr width-independent under Scion?); the optimal output norm per size is
# drawn by results/norm_transfer/compare_studies.py
ANALYSIS = {"recipe": "lr_transfer", "x": "optim.lr", "width": "model.width", "kind": "model.depth"}

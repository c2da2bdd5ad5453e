"""Norm transfer, study 4: which layer's learning rate matters most? (Filatov et al., "Optimal Scaling
Needs Optimal Norm", arXiv 2510.03871: the output layer is the most sensitive, and hidden layers prefer a
lower rate than the output layer.)

Study 1's model at B = 16 sequences and 2^19 tokens, the base lr at that cell's optimum (2^-2.5), scaled per
role with the free multipliers `param.lr_mult.*`: output x hidden multipliers on a 6 x 5 grid of powers of
two, and the embedding's multiplier alone. A role whose loss curve over its multiplier is sharpest is the most
sensitive one.

    scaling sweep run norm_transfer_layer_lr --store stores/norm_transfer_layer_lr --workers 2
"""

from sweeps.experiments.norm_transfer_eta_b import BASE as STUDY_1
from sweeps.spec import axis, chain, derived, product, steps_for_tokens

BASE = {**STUDY_1, "run.batch_size": 16, "tokens": 2 ** 19, "optim.lr": 2 ** -2.5}

SWEEP = product(
    chain(
        product(
            axis("param.lr_mult.output", [2.0 ** k for k in range(-3, 3)]),
            axis("param.lr_mult.hidden", [2.0 ** k for k in range(-3, 2)]),
        ),
        axis("param.lr_mult.embedding", [2.0 ** k for k in (-3, -2, -1, 1, 2)]),
    ),
    derived("run.steps", steps_for_tokens()),
)

ANALYSIS = {"recipe": "role_lr"}

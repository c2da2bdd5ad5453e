"""The quickstart's muP half on a finer grid with two seeds: is its lr*(width) drift the model, the grid or noise?

4 widths x 9 learning rates (factors of 2^0.5) x 2 seeds = 72 runs of the quickstart's MLP LM under muP (base
width 32). Results and the coordinate check that goes with them: results/quickstart/README.md.

    scaling sweep run quickstart_mup_fine --store stores/quickstart_mup_fine --workers 2
    scaling analyze sweeps/experiments/quickstart_mup_fine.py --store stores/quickstart_mup_fine --out results/quickstart/mup_fine
"""

from sweeps.experiments.quickstart import BASE as QUICKSTART_BASE
from sweeps.spec import axis, log2_grid, product, zip

BASE = {**QUICKSTART_BASE, "param.kind": "mup", "param.base_width": 32}

SWEEP = product(
    zip(axis("run.seed", [0, 1]), axis("run.data_seed", [0, 1])),
    axis("model.width", [32, 64, 128, 256]),
    axis("optim.lr", log2_grid(0.016, -2, 2, step=0.5)),  # 0.004 ... 0.064 in factors of 2^0.5
)

ANALYSIS = {"recipe": "lr_transfer", "x": "optim.lr", "width": "model.width", "kind": "param.kind",
            "seed_col": "run.seed"}

"""Reference data shipped with the package (analysis/data/; provenance and licence in its README.md).

Chinchilla: Epoch AI's digitisation of Hoffmann et al. (2022) Figure 4 and the published fits, from
Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt" (arXiv 2404.10102,
epoch-research/analyzing-chinchilla). Read through importlib.resources so that an installed wheel,
not only a source checkout, finds the files.
"""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd

__all__ = ["chinchilla_points", "chinchilla_reference_fit"]


def _chinchilla_file(name: str):
    return resources.files("analysis").joinpath("data", "chinchilla", name)


def chinchilla_points(*, fit_only: bool = False) -> pd.DataFrame:
    """The 245 digitised runs: row, N_params, D_tokens (= C/6N), C_flops, loss, excluded_top5_loss.

    fit_only: keep the 240 rows Epoch fits (drops the 5 highest losses), re-indexed from 0.
    """
    with _chinchilla_file("points.csv").open("rb") as f:
        df = pd.read_csv(f)
    if fit_only:
        df = df[df["excluded_top5_loss"] == 0].reset_index(drop=True)
    return df


def chinchilla_reference_fit() -> dict:
    """Published and replicated Approach 3 numbers (targets.json): under "targets" Epoch's fitted E, A,
    B, alpha, beta, bootstrap SEs and intervals and Hoffmann's values; also the 4,500-start grid
    ("init_grid"), the exclusion rule, the premature-stop and compute-optimal checks."""
    with _chinchilla_file("targets.json").open("rb") as f:
        return json.load(f)["chinchilla_approach3"]

"""Shared fixtures: tiny configs, so the whole suite compiles few programs and runs in minutes."""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

from scaling.config import Config, load_config  # noqa: E402

TINY = [
    "model.width=32", "model.depth=2", "model.n_heads=2", "model.context=32", "model.mlp_ratio=2",
    "run.batch_size=8", "run.steps=12", "run.log_every=4", "run.checkpoint_every=4", "run.eval_tokens=512",
    "data.source=synthetic",
]


def tiny_config(*overrides: str) -> Config:
    return load_config(overrides=TINY + list(overrides))


@pytest.fixture
def tiny() -> Config:
    return tiny_config()

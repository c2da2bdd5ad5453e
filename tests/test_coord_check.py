"""Coordinate check: after a few Adam steps, hidden activations are flat in width under muP and grow
under SP (notes/parametrizations.md section 5)."""

import pytest

from scaling.config import ModelConfig, OptimConfig, ParamConfig
from scaling.coord_check import coord_check, slopes

MODEL = ModelConfig(kind="mlp", width=128, depth=2, context=16, window=4)
ADAM = OptimConfig(name="adamw", lr=1e-2, b1=0.9, b2=0.999)
WIDTHS = [128, 256, 512, 1024]


@pytest.fixture(scope="module")
def slopes_by_kind():
    out = {}
    for param in (ParamConfig(kind="sp", init_std=0.0), ParamConfig(kind="mup", base_width=128, init_std=0.0)):
        out[param.kind] = slopes(coord_check(MODEL, param, ADAM, WIDTHS, steps=3))
    return out


def test_mup_hidden_activations_are_flat(slopes_by_kind):
    s = slopes_by_kind["mup"]
    for name in ("hidden_0", "hidden_1"):
        for t in (1, 2, 3):
            assert abs(s[(name, t)]) < 0.1, (name, t, s[(name, t)])


def test_sp_hidden_activations_grow_with_width(slopes_by_kind):
    s = slopes_by_kind["sp"]
    assert s[("hidden_1", 1)] > 0.5
    assert s[("logits", 1)] > 1.0  # the SP readout blows up


def test_first_layer_flat_at_init_under_both(slopes_by_kind):
    for kind in ("sp", "mup"):
        assert abs(slopes_by_kind[kind][("hidden_0", 0)]) < 0.05

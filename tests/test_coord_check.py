"""Coordinate check (Yang et al., Tensor Programs V, arXiv 2203.03466): after a few Adam steps the
activations are flat in width under muP and grow under SP; attention logits are measured over the
causal entries only; the rows are what the figure reads; `scaling coord-check` writes both."""

import csv
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from analysis.plots import plot_coord_check
from analysis.plots.diagnostics import MIN_OCTAVES
from scaling.config import ModelConfig, optim_config, ParamConfig
from scaling.coord_check import COLUMNS, coord_check, measured, slopes
from scaling.models.layers import attention_logits, causal_attention, unmasked_logits
from scaling_cli import main  # the console script: scaling's subcommands with the figure registered

MODEL = ModelConfig(kind="mlp", width=128, depth=2, context=16, window=4)
ADAM = optim_config(name="adamw", lr=1e-2, b1=0.9, b2=0.999)
WIDTHS = [128, 256, 512, 1024]

# Attention: one head, so d_head = width and the logit scale is the only width-dependent factor in
# q·k; few positions (batch 2 x context 8) and a small vocabulary keep the finite-width corrections
# small; two seeds average the rest. init_std stays at its default 0.02 (fixed under SP).
ATTN_MODEL = ModelConfig(kind="transformer", width=64, depth=1, n_heads=1, context=8, mlp="gelu", vocab_size=32)
ATTN_WIDTHS = [64, 128, 256, 512]


@pytest.fixture(scope="module")
def slopes_by_kind():
    out = {}
    for param in (ParamConfig(kind="sp", init_std=0.0), ParamConfig(kind="mup", base_width=128, init_std=0.0)):
        out[param.kind] = slopes(coord_check(MODEL, param, ADAM, WIDTHS, steps=3))
    return out


@pytest.fixture(scope="module")
def attn_slopes():
    out = {}
    for param in (ParamConfig(kind="sp"), ParamConfig(kind="mup", base_width=ATTN_WIDTHS[0])):
        rows = coord_check(ATTN_MODEL, param, ADAM, ATTN_WIDTHS, steps=1, batch_size=2, n_seeds=2)
        out[param.kind] = (rows, slopes(rows))
    return out


def test_mup_hidden_activations_are_flat(slopes_by_kind):
    s = slopes_by_kind["mup"]
    for name in ("pre_0", "hidden_0", "pre_1", "hidden_1"):
        for t in (1, 2, 3):
            assert abs(s[(name, t)]) < 0.1, (name, t, s[(name, t)])


def test_sp_hidden_activations_grow_with_width(slopes_by_kind):
    s = slopes_by_kind["sp"]
    assert s[("hidden_1", 1)] > 0.5
    assert s[("logits", 1)] > 1.0  # the SP readout blows up


def test_first_layer_flat_at_init_under_both(slopes_by_kind):
    for kind in ("sp", "mup"):
        assert abs(slopes_by_kind[kind][("hidden_0", 0)]) < 0.05
        assert abs(slopes_by_kind[kind][("pre_0", 0)]) < 0.05  # w_first: fan_in window x width


def test_attention_logits_are_measured_without_the_mask(attn_slopes):
    """The -1e30 causal bias made the mean |logit| ~4e29 at every width (slope 0 under SP and muP)."""
    for kind in ("sp", "mup"):
        rows = [r for r in attn_slopes[kind][0] if r["layer"] == "attn_logits_0"]
        assert rows and all(0 < r["rms"] < 1e3 and 0 < r["l1"] < 1e3 for r in rows), kind


def test_attention_logit_scale_at_init(attn_slopes):
    """At init q and k are independent, so q·k over d_head coordinates grows like sqrt(d): SP's
    1/sqrt(d) with a fixed init std leaves logits ∝ width (q, k entries ∝ sqrt(width)); muP's
    sqrt(d_base)/d (with std ∝ 1/sqrt(width)) gives logits ∝ d^-1/2."""
    assert attn_slopes["sp"][1][("attn_logits_0", 0)] == pytest.approx(1.0, abs=0.1)
    assert attn_slopes["mup"][1][("attn_logits_0", 0)] == pytest.approx(-0.5, abs=0.1)


def test_attention_logits_blow_up_under_sp_and_stay_flat_under_mup(attn_slopes):
    """After one Adam step the update of q is correlated with k (and k's with q): under SP the logits
    grow faster than width (Tensor Programs V, Fig. 5), under muP the learned part is Θ(1). Later steps
    add Δq·Δk/d of two independently initialised projections, O(d^-1/2) at these widths (microsoft/mup's
    coordinate-check examples zero-initialise the query to remove it), so the check stops at step 1."""
    sp, mup = attn_slopes["sp"][1], attn_slopes["mup"][1]
    assert sp[("attn_logits_0", 1)] > 1.0, sp[("attn_logits_0", 1)]
    assert abs(mup[("attn_logits_0", 1)]) < 0.15, mup[("attn_logits_0", 1)]
    assert abs(mup[("block_0", 1)]) < 0.1


def test_unmasked_logits_are_the_raw_scores_on_and_below_the_diagonal():
    q, k = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 3, 5, 4))
    masked = attention_logits(q, k, 0.5)
    raw = np.einsum("bhqk,bhsk->bhqs", np.asarray(q) * 0.5, np.asarray(k))
    rows, cols = np.tril_indices(5)
    np.testing.assert_array_equal(np.asarray(unmasked_logits(masked)), np.asarray(masked)[..., rows, cols])
    np.testing.assert_allclose(np.asarray(unmasked_logits(masked)), raw[..., rows, cols], rtol=1e-5, atol=1e-6)
    assert measured("attn_logits_0", masked).size == 2 * 3 * 15  # 15 causal entries of 25
    assert measured("hidden_0", masked).size == masked.size  # other activations: every entry
    assert float(jnp.max(masked[..., 0, 1])) < -1e29  # the model still sees the masked logits
    # the attention itself is unchanged: softmax over the masked logits, causal
    v = jax.random.normal(jax.random.PRNGKey(1), q.shape)
    probs = jax.nn.softmax(masked, axis=-1)
    np.testing.assert_allclose(np.asarray(causal_attention(q, k, v, 0.5)),
                               np.asarray(jnp.einsum("bhqs,bhsk->bhqk", probs, v)), rtol=1e-5, atol=1e-6)


def test_rows_are_what_the_figure_reads():
    """The rows used to be {width, t, name, l1} while the figure reads {width, step, layer, rms}."""
    rows = coord_check(ModelConfig(kind="mlp", width=16, depth=1, context=8, window=2), ParamConfig(), ADAM,
                       [16, 32], steps=1, batch_size=2)
    assert all(tuple(r) == COLUMNS for r in rows)
    sig = inspect.signature(plot_coord_check).parameters
    read = {sig[name].default for name in ("width", "value", "step", "panel")}
    assert read <= set(COLUMNS)
    fig = plot_coord_check(pd.DataFrame(rows))
    titles = [a.get_title() for a in fig.get_axes() if a.get_visible()]
    assert any(t.startswith("logits  (slope") and "nan" not in t for t in titles), titles


def test_figure_draws_a_flat_curve_flat_and_skips_zeros():
    """A curve drifting by 2 % filled the whole panel (log2 axis autoscaled to the data), and an exactly
    zero value (zero-initialised readout at step 0) went into log2 and the slope."""
    df = pd.DataFrame([{"width": w, "step": s, "layer": "flat", "rms": 1.0 + 0.01 * i if s else 0.0}
                       for i, w in enumerate((64, 128, 256)) for s in (0, 1)])
    fig = plot_coord_check(df)
    ax = fig.get_axes()[0]
    lo, hi = ax.get_ylim()
    assert np.log2(hi / lo) >= MIN_OCTAVES
    assert "nan" not in ax.get_title() and "(slope +0.01)" in ax.get_title()
    with pytest.raises(KeyError, match="rms"):
        plot_coord_check(df.rename(columns={"rms": "l2"}))


def test_coord_check_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "cc"
    sets = ["model.kind=mlp", "model.width=16", "model.depth=1", "model.context=8", "model.window=2",
            "param.kind=mup", "run.batch_size=2", "optim.lr=0.01"]
    code = main(["coord-check", *[a for s in sets for a in ("--set", s)], "--widths", "16,32", "--steps", "1",
                 "--out", str(out)])
    assert code == 0
    assert (out / "coord_check.png").stat().st_size > 0
    with open(out / "coord_check.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert {r["width"] for r in rows} == {"16", "32"} and {r["step"] for r in rows} == {"0", "1"}
    assert {"embedding", "pre_0", "hidden_0", "logits"} <= {r["layer"] for r in rows}
    summary = json.loads((out / "coord_check.json").read_text())
    assert summary["param"]["base_width"] == 16  # muP without a base width: the config's width
    assert {"layer", "step", "slope"} == set(summary["slopes_rms"][0])
    plot_coord_check(pd.read_csv(out / "coord_check.csv"))  # the written rows draw as they are
    assert main(["coord-check", "--widths", "16", "--out", str(tmp_path / "bad")]) == 2
    assert "--widths" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

"""Throughput features (issue #15): remat, bf16 compute with float32 master weights and float32
norms/softmax/loss, the persistent compilation cache across processes, the minimal JAX step the suite
compares against, and the CPU dry run of benchmarks/gpu.sh."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.compile_bench import compile_in_process
from benchmarks.memory_bench import measure as memory_measure
from benchmarks.minimal_step import minimal_loss, minimal_step_fn
from scaling import models
from scaling.config import ConfigError, load_config
from scaling.hyper import program_config
from scaling.program import Program

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.width=32", "model.depth=3", "model.n_heads=2", "model.context=16", "run.batch_size=4",
        "data.source=synthetic"]


def _tokens(cfg, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.model.vocab_size, (cfg.run.batch_size,
                                                                                    cfg.model.context + 1)), jnp.int32)


@pytest.mark.parametrize("scan", [False, True])
def test_remat_gives_the_same_loss_and_grads(scan):
    cfg = load_config(overrides=TINY + [f"model.scan_layers={str(scan).lower()}"])
    params, _ = models.init(cfg.model, jax.random.PRNGKey(0))
    toks = _tokens(cfg)
    plain = jax.jit(jax.value_and_grad(lambda p: models.loss_fn(cfg.model, p, toks)))(params)
    remat_model = dataclasses.replace(cfg.model, remat=True)
    remat = jax.jit(jax.value_and_grad(lambda p: models.loss_fn(remat_model, p, toks)))(params)
    np.testing.assert_allclose(remat[0], plain[0], rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(remat[1]), jax.tree_util.tree_leaves(plain[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_remat_lowers_the_compiled_steps_temp_bytes_and_the_estimate_tracks_the_peak():
    """Under lax.scan the plain step keeps every layer's activations (stacked residuals), remat only the
    block inputs. (With unrolled blocks XLA:CPU drops remat's optimization barriers and CSE merges the
    recomputation back: same temp bytes; benchmarks/README.md.)"""
    base = TINY + ["model.depth=4", "model.scan_layers=true", "model.context=32"]
    plain, remat = memory_measure(base), memory_measure(base + ["model.remat=true"])
    assert remat["xla"]["temp"] < 0.6 * plain["xla"]["temp"], (plain["xla"], remat["xla"])
    assert remat["estimate"]["activations"] < plain["estimate"]["activations"]
    unrolled = memory_measure(TINY + ["model.context=32"])
    assert 0.5 < unrolled["peak_over_estimate"] < 2.0, unrolled


def test_remat_is_a_transformer_option():
    with pytest.raises(ConfigError, match=r"model\.remat"):
        load_config(overrides=["model.kind=mlp", "model.remat=true"])


def _ops(jaxpr, out):
    """(primitive, input dtypes) counts over a jaxpr and every sub-jaxpr (custom_vjp, remat, pjit, cond)."""
    for e in jaxpr.eqns:
        dtypes = tuple(sorted({str(v.aval.dtype) for v in e.invars if hasattr(v.aval, "dtype")}))
        out[(e.primitive.name, dtypes)] += 1
        for value in e.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _ops(inner, out)
    return out


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_bfloat16_runs_matmuls_in_bf16_and_norms_softmax_loss_in_float32(mlp):
    cfg = load_config(overrides=TINY + [f"model.mlp={mlp}", "run.compute_dtype=bfloat16"])
    params, _ = models.init(cfg.model, jax.random.PRNGKey(0))
    toks = _tokens(cfg)
    fn = jax.value_and_grad(lambda p: models.loss_fn(cfg.model, p, toks, compute_dtype=jnp.bfloat16))
    ops = _ops(jax.make_jaxpr(fn)(params).jaxpr, collections.Counter())
    bf16_dots = sum(n for (name, dt), n in ops.items() if name == "dot_general" and dt == ("bfloat16",))
    f32_dots = sum(n for (name, dt), n in ops.items() if name == "dot_general" and dt != ("bfloat16",))
    assert bf16_dots > 10 * cfg.model.depth and f32_dots <= 2, ops  # only the one-hot embedding and its grad
    for (name, dt), n in ops.items():  # statistics, softmax, log-softmax: float32 only
        if name in ("reduce_sum", "reduce_max", "exp", "log", "rsqrt", "div"):
            assert dt == ("float32",), (name, dt, n)
    loss, grads = jax.jit(fn)(params)
    assert loss.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
    loss32 = jax.jit(lambda p: models.loss_fn(cfg.model, p, toks))(params)
    assert abs(float(loss) - float(loss32)) < 2e-2 * float(loss32)


def test_bfloat16_train_step_keeps_float32_master_weights():
    cfg = load_config(overrides=TINY + ["run.compute_dtype=bfloat16"])
    program = Program(program_config(cfg))
    state = program.init_state(jax.random.PRNGKey(0), cfg)
    state, metrics = program.step(state, _tokens(cfg), jnp.int32(0), False, program.hyper_values(cfg))
    leaves = jax.tree_util.tree_leaves(state.params) + jax.tree_util.tree_leaves(state.opt_state)
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in leaves)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(metrics["loss"])


def test_minimal_step_is_the_same_model_and_the_same_update():
    """The suite's ≤ 1.10 comparison means something only if the hand-written step computes our loss and
    our AdamW update."""
    cfg = load_config(overrides=TINY + ["model.mlp=gelu", "optim.weight_decay=0.1"])
    program = Program(program_config(cfg))
    state = program.init_state(jax.random.PRNGKey(0), cfg)
    toks = _tokens(cfg)
    assert float(minimal_loss(cfg, state.params, toks)) == pytest.approx(float(program.loss(state.params, toks)),
                                                                         rel=1e-6)
    step, tx = minimal_step_fn(cfg)
    mine = jax.tree_util.tree_map(jnp.copy, state.params)
    mine, _, _ = step(mine, tx.init(mine), toks)
    ours, _ = program.step(state, toks, jnp.int32(0), False, program.hyper_values(cfg))
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(mine)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_a_second_process_reads_the_persistent_compilation_cache(tmp_path):
    """The cache as a sweep worker enables it (sweeps.worker.configure_process, every compilation cached):
    the first process fills it, the second compiles nothing new and reports cache hits."""
    over = ["model.width=16", "model.depth=1", "model.n_heads=2", "model.context=8", "run.batch_size=2",
            "data.source=synthetic"]
    first = compile_in_process(over, str(tmp_path), timeout=240)
    entries = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    second = compile_in_process(over, str(tmp_path), timeout=240)
    assert first["cache_misses"] >= 1 and first["cache_hits"] == 0 and entries, first
    assert second["cache_hits"] >= 1 and second["cache_misses"] == 0, second
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == entries


def test_suite_reports_a_failing_part_and_still_writes_the_others(tmp_path, monkeypatch):
    from benchmarks import suite

    def fails(p):
        raise RuntimeError("boom")

    monkeypatch.setattr(suite, "PARTS", {"good": lambda p: ([suite.row("a ratio", 1.5, "≤ 2")], {"x": 1}),
                                         "bad": fails})
    result = suite.run(["good", "bad"], "smoke", tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["errors"] == {"bad": "RuntimeError: boom"} and saved["raw"] == {"good": {"x": 1}}
    assert [(r["part"], r["value"]) for r in saved["table"]] == [("good", 1.5), ("bad", None)]
    assert result["machine"] == saved["machine"] == suite.machine_name()


def test_machine_name_is_a_safe_file_name():
    from benchmarks.suite import machine_name

    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", machine_name())


def test_gpu_script_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu.sh --smoke: every part runs at tiny sizes on the CPU and reports JSON, so the script
    the GPU machine runs cannot rot."""
    env = {**os.environ, "OUT": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_results.json").read_text())
    assert set(result["parts"]) == {"env", "mfu", "batched", "optim", "sharded"}
    errors = {k: v["error"] for k, v in result["parts"].items() if "error" in v}
    assert not errors, errors
    assert result["parts"]["mfu"]["tokens_per_s"] > 0 and result["parts"]["batched"]["batched"]

"""Sharded training (scaling.sharding): configs and layouts here; the multi-device checks in ONE subprocess
with 8 fake CPU devices (`_worker`, run by test_sharded_runs_match_one_device): loss, gradients, one
optimizer step and its logged norms of AdamW, Muon and Scion on meshes of 2, 4 and 8 devices (data-only,
FSDP-only, both, and tensor) against the one-device run (the 8-device meshes span every device: norm
logging used to deadlock there, scaling.norms._one_at_a_time); per_matrix orthogonalises whole matrices
only; the sharded train loop against the unsharded one; a checkpoint written on one mesh restored onto another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.config import ConfigError, load_config
from scaling.sharding import MeshShape, ShardingRules, collective_bytes, partition_spec
from scaling.specs import ParamSpec

BASE = ["model.width=32", "model.depth=2", "model.n_heads=2", "model.context=16", "model.mlp_ratio=2",
        "run.batch_size=8", "run.eval_tokens=64", "data.source=synthetic"]
# (optimizer, mesh overrides): 2, 4 and 8 devices; data-only, FSDP-only, both, and tensor; all three
# optimizers on data=2 x fsdp=4 (the communication comparison); the loop test adds data=2 x fsdp=2
MESHES = {
    "adamw": {"data=2": ["run.mesh.data=2"], "data=2,fsdp=4": ["run.mesh.data=2", "run.mesh.fsdp=4"]},
    "muon": {"fsdp=8": ["run.mesh.fsdp=8"],
             "data=2,fsdp=4": ["run.mesh.data=2", "run.mesh.fsdp=4"]},
    "scion": {"data=8": ["run.mesh.data=8"], "fsdp=2,tensor=2": ["run.mesh.fsdp=2", "run.mesh.tensor=2"],
              "data=2,fsdp=4": ["run.mesh.data=2", "run.mesh.fsdp=4"]},
}
TOL = 1e-5  # relative: max |x_mesh - x_1| / max |x_1| (float32 sums in another order)
# The first update relative to its own size, per leaf in the Frobenius norm: AdamW's first step is
# sign(g) (and Muon/Scion hand embedding and output to it, or to Sign), so a gradient entry below the
# rounding noise of its sum can flip; that bounds this error, not the orthogonalisation (per_matrix: TOL).
UPDATE_TOL = 1e-3


def test_mesh_fields_are_validated_by_name():
    with pytest.raises(ConfigError, match=r"run\.mesh\.fsdp=0 must be >= 1"):
        load_config(overrides=["run.mesh.fsdp=0"])
    with pytest.raises(ConfigError, match=r"run\.batch_size=6 must be divisible by the 4 batch shards of run\.mesh"):
        load_config(overrides=["run.mesh.data=2", "run.mesh.fsdp=2", "run.batch_size=6"])
    with pytest.raises(ConfigError, match=r"run\.sharding_rules\.embed=\['model'\]: 'model' is not a mesh axis"):
        load_config(overrides=["run.sharding_rules.embed=model"])
    cfg = load_config(overrides=["run.mesh.tensor=2", "run.sharding_rules.batch=data", "run.sharding_rules.vocab="])
    assert cfg.run.mesh == MeshShape(tensor=2) and cfg.run.sharding_rules.batch == ("data",)
    assert cfg.run.sharding_rules.vocab == ()


def test_partition_specs_follow_the_rules_table():
    rules, mesh = ShardingRules(), MeshShape(data=2, fsdp=4, tensor=2)
    wq = ParamSpec((2, 32, 16), "hidden", 32, 16, ("layers", "embed", "heads"))
    assert tuple(partition_spec(wq.axes, wq.shape, rules, mesh)) == (None, "fsdp", "tensor")
    # a repeated logical name shards its first dimension only; an indivisible dimension is replicated
    assert tuple(partition_spec(("layers", "mlp", "mlp"), (2, 8, 8), rules, mesh)) == (None, "tensor", None)
    assert tuple(partition_spec(("vocab", "embed"), (255, 6), rules, mesh)) == (None, None)
    assert tuple(partition_spec(("batch", None), (8, 17), rules, mesh)) == (("data", "fsdp"), None)


def test_collective_bytes_reads_operand_sizes():
    hlo = ("  %all-reduce.1 = f32[16,8]{1,0} all-reduce(f32[16,8]{1,0} %x), channel_id=1, to_apply=%add\n"
           "  %ag = bf16[64]{0} all-gather(bf16[8]{0} %y), dimensions={0}\n"
           "  %s = (f32[4]{0}, f32[4]{0}) all-to-all-start(f32[4]{0} %a, f32[4]{0} %b), dimensions={0}\n"
           "  %d = (f32[4]{0}, f32[4]{0}) all-to-all-done(%s)\n")
    got = collective_bytes(hlo)
    assert got["all-reduce"] == 16 * 8 * 4 and got["all-gather"] == 8 * 2 and got["all-to-all"] == 32


def test_batched_runs_on_a_mesh_are_refused_before_anything_is_written(tmp_path):
    from scaling.train import train_runs

    cfgs = [load_config(overrides=BASE + ["run.mesh.data=2", f"optim.lr={lr}"]) for lr in (1e-3, 2e-3)]
    with pytest.raises(ConfigError, match=r"run\.mesh=.*train one at a time"):
        train_runs(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


def test_a_mesh_larger_than_the_devices_is_refused_before_anything_is_written(tmp_path):
    import jax

    from scaling.train import train

    n = len(jax.devices())
    with pytest.raises(ConfigError, match=rf"run\.mesh=.*needs {2 * n} devices; this process sees {n}"):
        train(load_config(overrides=BASE + [f"run.mesh.data={2 * n}", f"run.batch_size={2 * n}"]), tmp_path / "r")
    assert not (tmp_path / "r" / "config.json").exists()


def test_sharded_runs_match_one_device(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, __file__, str(out), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key, errors in r["step"].items():
        for what, err in errors.items():
            tol = UPDATE_TOL if what in ("update", "update norms") else TOL
            assert what == "update_max" or err < tol, f"{key}: {what} differs from one device by {err:.2e} (relative)"
    for key, err in r["grads"].items():
        assert err < TOL, f"{key}: gradients differ from one device by {err:.2e} (relative)"
    for key, ok in r["shardings"].items():
        assert ok, f"{key}: the new state is not sharded as its layout says"
    assert r["per_matrix"]["err"] < TOL, r["per_matrix"]
    assert r["per_matrix"]["dots_on_whole_matrices"], r["per_matrix"]["dot_shapes"]
    assert r["per_matrix"]["all_to_all_bytes"] > 0
    for what, err in r["loop"].items():
        assert err < 1e-4, f"sharded train loop: {what} differs from one device by {err:.2e}"
    assert r["restore"]["equal"] and r["restore"]["sharded_as_new_mesh"], r["restore"]
    both = "data=2,fsdp=4"  # whole matrices move to their owners and back: more all-to-all than AdamW's
    for opt in ("muon", "scion"):
        assert r["comm"][f"{opt} {both}"]["all-to-all"] > r["comm"][f"adamw {both}"]["all-to-all"], r["comm"]


# ---- the subprocess (8 fake CPU devices) ----

def _worker(out_path: str, tmp: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling import hyper
    from scaling.checkpoint import Checkpointer
    from scaling.optim.newton_schulz import newton_schulz
    from scaling.program import Program
    from scaling.record import RunRecord, checkpoint_scalars
    from scaling.sharding import per_matrix
    from scaling.train import train

    assert len(jax.devices()) == 8
    tokens = np.random.default_rng(0).integers(0, 256, (8, 17)).astype(np.int32)
    get = jax.device_get
    leaves = jax.tree_util.tree_leaves

    def rel(a, b, scale=None):
        a, b = [np.asarray(x, np.float64) for x in (a, b)]
        return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b if scale is None else scale))), 1e-30))

    def tree_rel(a, b, scale=None):
        scales = leaves(scale) if scale is not None else [None] * len(leaves(b))
        return max(rel(x, y, s) for x, y, s in zip(leaves(a), leaves(b), scales))

    def one_step(overrides):
        cfg = load_config(overrides=BASE + overrides)
        program = Program(hyper.program_config(cfg))
        state = program.init_state(jax.random.PRNGKey(0), cfg)
        params0, args = get(state.params), (state, tokens, jnp.int32(0), True, program.hyper_values(cfg))
        if program.layout is None:
            new, metrics = program.compiled().step(*args)
            return program, params0, get(new.params), get(metrics), True, None
        with program.layout.activate():  # compiled ahead of time: its HLO gives the communication volume
            compiled = program.compiled().step.jitted.lower(*args).compile()
            new, metrics = compiled(*args)
        ok = all(a.sharding.is_equivalent_to(s, a.ndim)
                 for a, s in zip(leaves(new), leaves(program.state_shardings(new))))
        # the optimizer state mirrors the params: as many sharded leaves as the params, per copy it keeps
        sharded = lambda t: sum(not a.sharding.is_fully_replicated for a in leaves(t))  # noqa: E731
        copies = {"adamw": 2, "muon": 1, "scion": 1}[program.cfg.optim.name]  # Muon: momentum or Adam's mu, nu
        shards_params = program.layout.shape.fsdp * program.layout.shape.tensor > 1
        ok = (ok and sharded(new.opt_state) >= copies * sharded(new.params)
              and (sharded(new.params) > 0) == shards_params)
        return program, params0, get(new.params), get(metrics), ok, collective_bytes(compiled.as_text())

    results: dict = {"step": {}, "grads": {}, "shardings": {}, "comm": {}}
    for opt, meshes in MESHES.items():
        ref_prog, p0, p1, m1, _, _ = one_step([f"optim.name={opt}"])
        update = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), p1, p0)
        for name, mesh in meshes.items():
            program, q0, q1, m, ok, comm = one_step([f"optim.name={opt}"] + mesh)
            key = f"{opt} {name}"
            results["comm"][key] = comm
            delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), q1, q0)
            results["step"][key] = {"init": tree_rel(q0, p0), "loss": rel(m["loss"], m1["loss"]),
                                    "grad_norm": rel(m["grad_norm"], m1["grad_norm"]),
                                    "update_max": tree_rel(delta, update, update),
                                    "update": max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
                                                  for a, b in zip(leaves(delta), leaves(update))),
                                    **{f"{kind} norms": max(rel(m[k], m1[k]) for k in m1 if f"/{kind}/" in k)
                                       for kind in ("param", "update")}}
            results["shardings"][key] = ok
            if opt == "adamw":  # gradients do not depend on the optimizer
                layout = program.layout
                psh = layout.param_shardings(program.specs)
                grad = jax.jit(jax.grad(program.loss), in_shardings=(psh, layout.batch_sharding(tokens.shape)),
                               out_shardings=psh)
                with layout.activate():
                    g = get(grad(jax.device_put(q0, psh), tokens))
                g_ref = get(jax.jit(jax.grad(ref_prog.loss))(p0, tokens))
                results["grads"][name] = tree_rel(g, g_ref, g_ref)

    # per_matrix: whole matrices only, same values as per leaf
    cfg = load_config(overrides=BASE + ["optim.name=muon", "run.mesh.data=2", "run.mesh.fsdp=4"])
    program = Program(hyper.program_config(cfg))
    layout, specs = program.layout, program.specs
    params = get(program.init_state(jax.random.PRNGKey(1), cfg).params)
    hidden = lambda s: s.role == "hidden"  # noqa: E731
    ns = lambda x: newton_schulz(x, 5, "muon")  # noqa: E731
    ref = per_matrix(ns, specs, params, select=hidden)
    psh = layout.param_shardings(specs)
    fn = jax.jit(lambda p: per_matrix(ns, specs, p, select=hidden), in_shardings=(psh,), out_shardings=psh)
    with layout.activate():
        got = get(fn(jax.device_put(params, psh)))
        text = fn.lower(jax.device_put(params, psh)).compile().as_text()
    whole = {tuple(sorted(s.shape[-2:])) for s in leaves(specs, is_leaf=lambda s: hasattr(s, "role"))
             if s.role == "hidden"}
    whole |= {(m, m) for m, _ in whole}
    dots = [tuple(int(d) for d in line.split("= f32[")[1].split("]")[0].split(","))[-2:]
            for line in text.splitlines() if " dot(" in line and "= f32[" in line]
    results["per_matrix"] = {
        "err": max(rel(a, b) for a, b in zip(leaves(got), leaves(ref))),
        "dot_shapes": sorted(set(map(str, dots))),
        "dots_on_whole_matrices": bool(dots) and all(tuple(sorted(d)) in whole for d in dots),
        "all_to_all_bytes": collective_bytes(text)["all-to-all"]}

    # the train loop on a mesh (evaluation, norms, checkpoints) against one device
    loop = ["run.steps=4", "run.log_every=1", "run.checkpoint_every=2", "optim.name=muon"]
    a = train(load_config(overrides=BASE + loop), Path(tmp) / "one")
    mesh_a = ["run.mesh.data=2", "run.mesh.fsdp=2"]
    b = train(load_config(overrides=BASE + loop + mesh_a), Path(tmp) / "mesh")
    rows = lambda d: [json.loads(x) for x in (Path(tmp) / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    results["loop"] = {"final_val_loss": rel(b["final_val_loss"], a["final_val_loss"]),
                       "train_loss": max(rel(x["train_loss"], y["train_loss"])
                                         for x, y in zip(rows("mesh")[1:], rows("one")[1:]))}

    # a checkpoint written on mesh A (data=2, fsdp=2) restored onto mesh B (fsdp=4, tensor=2)
    cfg_b = load_config(overrides=BASE + loop + ["run.mesh.fsdp=4", "run.mesh.tensor=2"])
    prog_b = Program(hyper.program_config(cfg_b))
    target = prog_b.init_state(jax.random.PRNGKey(0), cfg_b)
    record = RunRecord(cfg_b, Path(tmp) / "mesh")
    restored = record.restore(target)
    record.close()
    saved = Checkpointer(Path(tmp) / "mesh" / "ckpt").restore_latest(
        {"params": get(target.params), "opt_state": get(target.opt_state), **checkpoint_scalars(0, 0.0, 0.0)})[1]
    results["restore"] = {
        "step": record.start,
        "equal": all(np.array_equal(np.asarray(x), np.asarray(y))
                     for x, y in zip(leaves(get(restored.params)), leaves(saved["params"]))),
        "sharded_as_new_mesh": all(x.sharding.is_equivalent_to(s, x.ndim) for x, s in
                                   zip(leaves(restored), leaves(prog_b.state_shardings(restored))))}

    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))
    _worker(sys.argv[1], sys.argv[2])

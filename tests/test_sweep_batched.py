"""Batched runs: one vmapped program for runs that differ only in scalar hyperparameters and seeds.

Each member gets its own directory, metrics and summary, equal to training it alone to fp tolerance; a
diverging member is recorded and stops counting while the others go on; the store protocol is unchanged."""

import json
import math
from pathlib import Path

import pytest

from scaling import hyper
from scaling.config import load_config
from scaling.program import get_program
from scaling.train import MembersOutOfStep, batch_key, train, train_runs
from sweeps.experiment import expand, load_experiment
from sweeps.store import Store
from sweep_fixtures import TINY_BASE, write_experiment
from sweeps.worker import EXIT_DONE, WorkerOptions, run_worker

BASE = [f"{k}={v}" for k, v in TINY_BASE.items()] + ["run.steps=20"]
MEMBERS = [("1e-3", 0, 0), ("30.0", 1, 1)]  # (lr, seed, data seed): the second one diverges


def _cfg(lr, seed, data_seed, *extra):
    return load_config(overrides=BASE + [f"optim.lr={lr}", f"run.seed={seed}", f"run.data_seed={data_seed}",
                                         *extra])


def _rows(d: Path):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def _assert_close_rows(a: list[dict], b: list[dict], rtol: float = 1e-5):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(vb, float) and math.isfinite(vb):
                assert va == pytest.approx(vb, rel=rtol, abs=1e-7), (ra["step"], k)
            else:
                assert va == vb, (ra["step"], k)


def test_hyperparameter_sweeps_share_one_compiled_program():
    a, b = _cfg("1e-3", 0, 0), _cfg("3e-3", 5, 1, "optim.b2=0.99", "param.lr_mult.output=2")
    assert get_program(a) is get_program(b)
    assert batch_key(a) == batch_key(b)
    assert batch_key(a) != batch_key(_cfg("1e-3", 0, 0, "model.width=64"))
    assert batch_key(a) != batch_key(_cfg("1e-3", 0, 0, "run.steps=30"))  # the loop differs
    # every declared scalar is an input whatever its value; only a zero weight decay is static (its link
    # is skipped): decays 0.1 and 0.3 share a program, 0 has its own
    assert "optim.weight_decay" in get_program(a).fields
    decayed = [hyper.program_config(_cfg("1e-3", 0, 0, f"optim.weight_decay={wd}")) for wd in (0.1, 0.3)]
    assert decayed[0] == decayed[1] != hyper.program_config(a)
    sgd = [_cfg("1e-3", 0, 0, "optim.name=sgd", f"optim.b1={b1}") for b1 in (0, 0.9)]
    assert batch_key(sgd[0]) == batch_key(sgd[1])  # plain SGD and heavy ball: one program


@pytest.mark.parametrize("extra", [("param.lr_mult.output=2", "optim.b1=0.8"),
                                   ("optim.name=sgd", "optim.b1=0", "optim.weight_decay=0"),
                                   ("optim.name=muon", "optim.fallback_lr=0", "optim.weight_decay=0.1")])
def test_hyperparameter_inputs_match_compile_time_constants(extra):
    """The step with its hyperparameters as runtime inputs gives what the same step with them as Python
    constants gives (zeros included: zero decay, plain SGD, a fallback lr of 0 meaning lr)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling import data as data_lib

    cfg = _cfg("3e-3", 0, 0, *extra)
    ds = data_lib.load_dataset(cfg.data, 256)
    program = get_program(cfg)
    constants = {f: float(v) for f, v in program.hyper_values(cfg).items()}
    constant_step = jax.jit(lambda state, tokens, s: program.step_fn(state, tokens, s, False, constants))
    losses = []
    for step in (lambda st, b, s: program.step(st, b, s, False, program.hyper_values(cfg)), constant_step):
        state, out = program.init_state(jax.random.PRNGKey(0), cfg), []
        for s in range(3):
            state, m = step(state, data_lib.batch(ds.train, 0, s, 8, 33), jnp.int32(s))
            out.append(float(m["loss"]))
        losses.append(out)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_batched_members_match_training_each_alone(tmp_path):
    cfgs = [_cfg(*m) for m in MEMBERS]
    batched = train_runs(cfgs, [tmp_path / f"b{i}" for i in range(2)])
    alone = [train(c, tmp_path / f"a{i}") for i, c in enumerate(cfgs)]
    assert [s["status"] for s in batched] == ["done", "diverged"]
    for i in range(2):
        _assert_close_rows(_rows(tmp_path / f"b{i}"), _rows(tmp_path / f"a{i}"))
        for key in ("status", "steps", "tokens", "diverged_step", "n_params"):
            assert batched[i][key] == alone[i][key]
    assert batched[1]["diverged_step"] < 20 and batched[0]["steps"] == 20  # the other went on
    # a member's directory is an ordinary run directory: train() sees the run as finished and agrees
    assert train(cfgs[0], tmp_path / "b0") == json.loads((tmp_path / "b0" / "summary.json").read_text())


def test_members_resuming_from_different_steps_are_refused_before_writing(tmp_path):
    cfgs = [_cfg(*m) for m in MEMBERS]
    calls = {"n": 0}

    def stop_at_5():
        calls["n"] += 1
        return calls["n"] == 5

    assert train(cfgs[0], tmp_path / "m0", should_stop=stop_at_5)["status"] == "preempted"
    before = (tmp_path / "m0" / "metrics.jsonl").read_text()
    with pytest.raises(MembersOutOfStep):
        train_runs(cfgs, [tmp_path / "m0", tmp_path / "m1"])
    assert (tmp_path / "m0" / "metrics.jsonl").read_text() == before


def test_batching_worker_preempted_and_resumed_matches_sequential(tmp_path):
    path = write_experiment(tmp_path / "batch.py", [1e-3, 30.0], [0, 1], base={"run.steps": 20})
    exp = load_experiment(path)
    seq, bat = Store(tmp_path / "seq"), Store(tmp_path / "bat")
    ids = seq.register(exp, expand(exp))
    assert bat.register(exp, expand(exp)) == ids
    assert run_worker(seq.root, "batch", WorkerOptions(jax_cache=None)) == EXIT_DONE

    class StopAfter:
        n = 0

        def is_set(self):
            self.n += 1
            return self.n > 10

        def wait(self, t):
            pass

    options = WorkerOptions(jax_cache=None, batch="on", max_batch=2)
    assert run_worker(bat.root, "batch", options, stop=StopAfter()) == 75
    assert run_worker(bat.root, "batch", options) == EXIT_DONE
    for run_id in ids:
        assert bat.status(run_id)["state"] == seq.status(run_id)["state"]
        _assert_close_rows(_rows(bat.run_dir(run_id)), _rows(seq.run_dir(run_id)))
        assert bat.inspect(run_id).finished()
    starts = [e for r in ids for e in bat.events(r) if e["event"] == "start"]
    assert all(e.get("batch") == 2 for e in starts)  # every attempt was a batch of max_batch runs
    resumed = [e for e in starts if e["from_step"] > 0]
    assert len(resumed) == 2 and resumed[0]["from_step"] == 10  # the preempted batch resumed, together


def test_batched_members_share_the_validation_set_of_a_run_alone(tmp_path):
    """Members with different data seeds are scored on one validation set, the one a run trained alone
    gets: equal initial parameters give equal step-0 validation losses (before: one set per data seed)."""
    cfgs = [_cfg("1e-3", 0, d, "run.steps=2") for d in (0, 1)]
    train_runs(cfgs, [tmp_path / f"b{d}" for d in (0, 1)])
    alone = train(cfgs[1], tmp_path / "a1")
    assert alone["status"] == "done"
    v0, v1, va = (_rows(tmp_path / d)[0]["val_loss"] for d in ("b0", "b1", "a1"))
    assert v0 == v1
    assert v1 == pytest.approx(va, rel=1e-6)

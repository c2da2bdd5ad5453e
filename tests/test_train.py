"""The training loop: bit-identical resume, idempotent reruns, divergence as data, logged norms."""

import json

import numpy as np
import pytest

from scaling import data as data_lib
from scaling.config import ConfigError, DataConfig
from scaling.train import eval_steps, train
from tests.conftest import tiny_config


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_eval_steps_are_geometric_and_include_the_end():
    assert eval_steps(20, 1) == [1, 2, 4, 8, 16, 20]
    assert eval_steps(16, 2) == [1, 2, 3, 4, 6, 8, 11, 16]


def test_batches_are_a_pure_function_of_seed_and_step():
    ds = data_lib.load_dataset(DataConfig(source="synthetic"), 256)
    a = data_lib.batch(ds.train, 3, 17, 4, 9)
    np.testing.assert_array_equal(a, data_lib.batch(ds.train, 3, 17, 4, 9))
    assert not np.array_equal(a, data_lib.batch(ds.train, 3, 18, 4, 9))
    assert not np.array_equal(a, data_lib.batch(ds.train, 4, 17, 4, 9))
    assert not np.array_equal(a, data_lib.batch(ds.train, 3, 17, 4, 9, stream=data_lib.VAL))


def test_shakespeare_is_split_by_play():
    ds = data_lib.load_dataset(DataConfig(), 256)
    assert len(ds.train) > 3_000_000 and len(ds.val) > 200_000
    assert b"ROMEO" in ds.train.tobytes() or b"ROMEO" in ds.val.tobytes()
    # no play straddles the split: the validation text does not occur inside the training text
    probe = ds.val[10_000:10_200].tobytes()
    assert probe not in ds.train.tobytes()


def test_resume_is_bit_identical(tmp_path):
    cfg = tiny_config()
    straight = train(cfg, tmp_path / "straight")
    assert straight["status"] == "done" and straight["steps"] == cfg.run.steps

    calls = {"n": 0}

    def stop_after_six():
        calls["n"] += 1
        return calls["n"] == 6

    first = train(cfg, tmp_path / "resumed", should_stop=stop_after_six)
    assert first == {"status": "preempted", "steps": 6}
    # simulate a crash after the checkpoint: rows past it and a torn last line must not survive
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 9, "train_loss": 0.0}) + "\n{\"step\": 10, \"trai")
    with pytest.warns(UserWarning, match="corrupt"):
        resumed = train(cfg, tmp_path / "resumed")
    assert _rows(tmp_path / "straight") == _rows(tmp_path / "resumed")
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "steps", "tokens"):
        assert resumed[key] == straight[key]


def test_rerun_of_finished_run_returns_its_summary(tmp_path):
    cfg = tiny_config()
    s1 = train(cfg, tmp_path)
    mtime = (tmp_path / "metrics.jsonl").stat().st_mtime_ns
    assert train(cfg, tmp_path) == s1
    assert (tmp_path / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_other_config_in_same_dir_is_refused(tmp_path):
    train(tiny_config(), tmp_path)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ConfigError, match="different run"):
        train(tiny_config("optim.lr=0.1"), tmp_path)
    assert (tmp_path / "config.json").read_text() == before


def test_too_large_lr_diverges_as_data(tmp_path):
    summary = train(tiny_config("optim.lr=30", "run.steps=30"), tmp_path)
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_step"] <= 30 and summary["diverge_reason"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_metrics_carry_losses_and_role_norms(tmp_path):
    cfg = tiny_config()
    train(cfg, tmp_path)
    rows = _rows(tmp_path)
    assert rows[0]["step"] == 0 and "val_loss" in rows[0] and "norm/param/output" in rows[0]
    evals = [r["step"] for r in rows if "val_loss" in r]
    assert evals == [0] + eval_steps(cfg.run.steps, cfg.run.eval_per_octave)
    last = rows[-1]
    for role in ("embedding", "hidden", "output", "vector"):
        assert last[f"norm/param/{role}"] > 0 and last[f"norm/update/{role}"] > 0
    assert any(k.startswith("opnorm/param/blocks.wq/") for k in last)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_validation_set_does_not_depend_on_batch_size_or_data_seed():
    """Runs differing in run.batch_size (or run.data_seed) score the same parameters identically: the
    validation set is ceil(eval_tokens / context) fixed sequences (before: eval_batches x batch_size,
    drawn with the data seed)."""
    import jax

    from scaling.program import get_program
    from scaling.train import validation_batches

    a, b = tiny_config("run.batch_size=8"), tiny_config("run.batch_size=4", "run.data_seed=3")
    ds = data_lib.load_dataset(a.data, 256)
    val_a, val_b = validation_batches(ds, a), validation_batches(ds, b)
    for x, y in zip(val_a, val_b):
        np.testing.assert_array_equal(x, y)
    assert sum(int(np.prod(v.shape[:-1])) for v in val_a) == a.run.eval_tokens // a.model.context
    params = get_program(a).init_state(jax.random.PRNGKey(0), a).params
    assert float(get_program(a).evaluate(params, val_a)) == float(get_program(b).evaluate(params, val_b))
    other = validation_batches(ds, tiny_config("run.eval_seed=1"))  # a different set only when asked
    assert not np.array_equal(other[0], val_a[0])


def test_chunked_validation_mean_is_the_mean_over_all_sequences():
    """10 sequences in chunks of 3 (a ragged last chunk of 1) give the mean of the 10 per-sequence losses."""
    import jax

    from scaling.program import get_program
    from scaling.train import validation_batches

    cfg = tiny_config("run.eval_tokens=320", "run.eval_batch_size=3")
    ds = data_lib.load_dataset(cfg.data, 256)
    chunked = validation_batches(ds, cfg)
    assert chunked[0].shape == (3, 3, 33) and chunked[1].shape == (1, 33)
    whole = validation_batches(ds, tiny_config("run.eval_tokens=320"))  # one chunk of 10
    assert whole[0].shape == (1, 10, 33) and whole[1].shape == (0, 33)
    seqs = whole[0][0]
    np.testing.assert_array_equal(np.concatenate([chunked[0].reshape(-1, 33), chunked[1]]), seqs)
    trainer = get_program(cfg)
    params = trainer.init_state(jax.random.PRNGKey(0), cfg).params
    loss = jax.jit(trainer.loss)
    per_sequence = np.mean([float(loss(params, s[None])) for s in seqs])
    np.testing.assert_allclose(float(trainer.evaluate(params, chunked)), per_sequence, rtol=1e-6)
    np.testing.assert_allclose(float(trainer.evaluate(params, whole)), per_sequence, rtol=1e-6)

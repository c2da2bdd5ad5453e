"""Train one run: `train(config, out_dir) -> summary`.

Writes into out_dir: config.json (resolved, with _meta), metrics.jsonl (one object per logged step),
ckpt/ (orbax), and summary.json last and atomically. Rerunning on the same directory resumes from
the newest readable checkpoint; since batches are a pure function of (data seed, step), the resumed
metrics are bit-identical to an uninterrupted run on CPU. A diverged run is data: it ends with
summary status "diverged", the step and the reason.

Row semantics: a row with step s was written after s optimizer updates (tokens = s·B·T).
`train_loss` is the loss of the batch that update s was computed on (the model after s-1 updates),
`val_loss` is measured on the fixed validation set (`validation_batches`: the same sequences for every
batch size and data seed) with the model after s updates.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling import data as data_lib
from scaling import hyper, models, parametrization
from scaling.checkpoint import Checkpointer
from scaling.config import Config, to_dict
from scaling.identity import check_same_run
from scaling.logs import MetricsLog, write_json_atomic
from scaling.norm_log import flatten_for_log, norm_metrics
from scaling.optim import build_optimizer, leaf_learning_rates
from scaling.schedules import make_schedule

FINAL_STATES = ("done", "diverged")


def eval_steps(total: int, per_octave: int) -> list[int]:
    """Geometric validation horizons round(2^(j/k)) <= total, plus the last step (powers of 2 included)."""
    steps, j = {total}, 0
    while (s := round(2 ** (j / per_octave))) <= total:
        steps.add(s)
        j += 1
    return sorted(steps)


def logged_steps(run) -> list[int]:
    """The steps whose rows metrics.jsonl holds once the run (a RunConfig) is done, step 0 included;
    a diverged run holds those before its diverged step, then that step. Integrity checks use it."""
    horizons = set(eval_steps(run.steps, run.eval_per_octave))
    norms_every = run.norms_every or run.log_every
    return [0] + [n for n in range(1, run.steps + 1)
                  if n % run.log_every == 0 or n % norms_every == 0 or n in horizons]


def _meta(cfg: Config, specs: Any) -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {**models.count_params(specs), "flops_per_token": models.flops_per_token(cfg.model, specs),
            "git_sha": sha, "jax": jax.__version__, "optax": optax.__version__, "host": platform.node(),
            "backend": jax.default_backend()}


def _check_same_run(path: Path, resolved: dict) -> None:
    """Refuse a run directory whose config.json holds another run (scaling.identity: same identity)."""
    check_same_run(path, resolved)


class Trainer:
    """Everything compiled for one program config (scaling.hyper): the train step, evaluation and
    initial norms. The step takes the run's hyperparameter values as inputs, so runs that differ only
    in them (a learning-rate sweep) share one Trainer and its compilations."""

    def __init__(self, cfg: Config, fields: tuple[str, ...] | None = None):
        """fields: the hyperparameters fed as inputs (default: every nonzero one, scaling.hyper); the
        others are compile-time constants (the fallback for a builder that branches on a value)."""
        self.run_cfg = cfg
        self.fields = hyper.traced_fields(cfg) if fields is None else tuple(fields)
        self.cfg = hyper.program_config(cfg, self.fields)
        self.specs = models.param_specs(self.cfg.model, self.cfg.param)
        self.schedule = make_schedule(self.cfg.run)
        self.compute_dtype = jnp.bfloat16 if self.cfg.run.compute_dtype == "bfloat16" else None
        self._step_jit = jax.jit(self._step, donate_argnums=(0, 1))
        self.evaluate = jax.jit(self._evaluate)
        self.param_norms = jax.jit(lambda p: norm_metrics(self.specs, p))

    def hyper_values(self, cfg: Config) -> dict:
        return hyper.values(cfg, self.fields)

    def init_state(self, key: jax.Array, cfg: Config | None = None) -> tuple[Any, Any]:
        """Parameters and optimizer state of `cfg` (default: the config this Trainer was built from)."""
        cfg = cfg or self.run_cfg
        params, specs = models.init(cfg.model, key, cfg.param, cfg.optim)
        tx = build_optimizer(cfg.optim, specs, parametrization.lr_multipliers(specs, cfg.param, cfg.optim),
                             self.schedule)
        return params, tx.init(params)

    def step(self, params, opt_state, tokens_BxT1, step, with_norms, hp: dict | None = None):
        """One update; hp defaults to the values of the config this Trainer was built from."""
        hp = self.hyper_values(self.run_cfg) if hp is None else hp
        return self._step_jit(params, opt_state, tokens_BxT1, step, with_norms, hp)

    def loss(self, params, tokens_BxT1):
        return models.loss_fn(self.cfg.model, params, tokens_BxT1, param=self.cfg.param,
                              compute_dtype=self.compute_dtype)

    def _step(self, params, opt_state, tokens_BxT1, step, with_norms, hp):
        optim, param = hyper.traced_sections(self.cfg, hp)
        lr_mults = parametrization.lr_multipliers(self.specs, param, optim)
        tx = build_optimizer(optim, self.specs, lr_mults, self.schedule)
        loss, grads = jax.value_and_grad(self.loss)(params, tokens_BxT1)
        grad_norm = optax.tree.norm(grads)
        clip = self.cfg.run.grad_clip
        if clip > 0:
            grads = jax.tree_util.tree_map(lambda g: g * jnp.minimum(1.0, clip / (grad_norm + 1e-12)), grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        lr = optim.lr * self.schedule(step)
        leaf_lrs = leaf_learning_rates(optim, self.specs, lr_mults, self.schedule(step))
        shapes = jax.eval_shape(lambda: norm_metrics(self.specs, params, updates, leaf_lrs))
        norms = jax.lax.cond(with_norms, lambda: norm_metrics(self.specs, params, updates, leaf_lrs),
                             lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
        return params, opt_state, {"loss": loss, "grad_norm": grad_norm, "lr": lr, **norms}

    def _evaluate(self, params, val):
        """Mean loss over a validation set (validation_batches): every chunk's mean weighted by its
        number of sequences, so the result is the mean over all sequences whatever the chunking."""
        chunks_CxNxT1, rest_RxT1 = val
        C, N, R = chunks_CxNxT1.shape[0], chunks_CxNxT1.shape[1], rest_RxT1.shape[0]
        total = jnp.float32(0.0)
        if C:
            total = jnp.sum(jax.lax.map(lambda b: self.loss(params, b), chunks_CxNxT1)) * N
        if R:  # a ragged last chunk: its own shape, weighted by its size
            total = total + self.loss(params, rest_RxT1) * R
        return total / (C * N + R)

    def traces(self) -> bool:
        """Whether the step traces with its hyperparameters as arrays (no Python branch on one)."""
        params, opt_state = jax.eval_shape(lambda k: self.init_state(k), jax.random.PRNGKey(0))
        B, T = self.cfg.run.batch_size, self.cfg.model.context
        try:
            jax.eval_shape(self._step, params, opt_state, jax.ShapeDtypeStruct((B, T + 1), jnp.int32),
                           jnp.int32(0), False, self.hyper_values(self.cfg))
        except Exception:  # noqa: BLE001 - e.g. a Python branch on a traced value; the constant-mode
            return False     # fallback re-raises any error that is not about the hyperparameter inputs
        return True


@functools.lru_cache(maxsize=16)
def _traceable_fields(program: Config) -> tuple[str, ...]:
    """The hyperparameters of this program that can be inputs: all of them, or (when a builder
    branches in Python on one, e.g. SGD's `if b1 > 0`) the largest set found by adding one at a time."""
    fields = hyper.traced_fields(program)
    if Trainer(program).traces():
        return fields
    kept: list[str] = []
    for f in fields:
        if Trainer(program, tuple(kept + [f])).traces():
            kept.append(f)
    return tuple(kept)


@functools.lru_cache(maxsize=2)
def _cached_trainer(program: Config, fields: tuple[str, ...]) -> Trainer:
    return Trainer(program, fields)


def get_trainer(cfg: Config) -> Trainer:
    """Compiled programs are reused across runs with the same program config (scaling.hyper): a rerun,
    a resumed run, or another point of a learning-rate sweep. The cache is bounded, so a worker that
    trains many runs keeps its memory flat."""
    fields = _traceable_fields(hyper.program_config(cfg))
    return _cached_trainer(hyper.program_config(cfg, fields), fields)


def train(cfg: Config, out_dir: str | Path, *, progress: bool = False,
          should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (or resume, or return the finished summary of) the run in out_dir."""
    out = Path(out_dir)
    resolved = to_dict(cfg)
    summary_path, config_path = out / "summary.json", out / "config.json"
    if config_path.exists():
        _check_same_run(config_path, resolved)
        if summary_path.exists():
            try:
                summary = json.loads(summary_path.read_text())
                if summary.get("status") in FINAL_STATES:
                    return summary
            except json.JSONDecodeError:
                pass  # a torn summary is rewritten below
    dataset = data_lib.load_dataset(cfg.data, cfg.model.vocab_size)  # input errors before any write
    trainer = get_trainer(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not config_path.exists():
        write_json_atomic(config_path, {**resolved, "_meta": _meta(cfg, trainer.specs)})
    return _run(cfg, trainer, dataset, out, progress, should_stop)


class RunRecord:
    """Host-side bookkeeping of one run directory: checkpoints, metrics rows, evaluation horizons, the
    divergence test and the summary. The single-run loop below and the vmapped loop (scaling.batched)
    both use it, so a run's files do not depend on how it was trained."""

    def __init__(self, cfg: Config, out: Path):
        run = cfg.run
        self.cfg, self.out = cfg, out
        self.tokens_per_step = run.batch_size * cfg.model.context
        self.horizons = set(eval_steps(run.steps, run.eval_per_octave))
        self.norms_every = run.norms_every or run.log_every
        self.ckpt = Checkpointer(out / "ckpt")
        self.log = MetricsLog(out / "metrics.jsonl")
        self.status, self.reason, self.diverged_step = "done", None, None
        self.start, self.initial_loss, self.elapsed_before = 0, math.nan, 0.0
        self.val_losses: list[float] = []
        self.last_row: dict = {}
        self.t_start = time.time()

    def restore(self, params: Any, opt_state: Any) -> tuple[Any, Any]:
        """The newest readable checkpoint's (params, opt_state), or the given initial ones; metrics.jsonl
        is cut back to the restored step."""
        state = {"params": params, "opt_state": opt_state, "step": jnp.int32(0),
                 "initial_loss": jnp.float32(jnp.nan), "elapsed_s": jnp.float32(0.0)}
        restored = self.ckpt.restore_latest(state)
        if restored is not None:
            state = restored[1]
        self.start = int(state["step"])
        self.initial_loss, self.elapsed_before = float(state["initial_loss"]), float(state["elapsed_s"])
        rows = self.log.restart_at(self.start if self.start > 0 else -1)  # from scratch: step 0 is redone
        self.val_losses = [r["val_loss"] for r in rows if isinstance(r.get("val_loss"), (int, float))]
        self.last_row = rows[-1] if rows else {}
        self.t_start = time.time()
        return state["params"], state["opt_state"]

    def log_initial(self, val_loss: float, param_norms: dict) -> None:
        self.last_row = {"step": 0, "tokens": 0, "val_loss": val_loss, **flatten_for_log(param_norms)}
        self.log.append(self.last_row)
        self.val_losses.append(val_loss)

    def with_norms(self, n: int) -> bool:
        return n % self.norms_every == 0 or n in self.horizons

    def after_step(self, n: int, m: dict, evaluate: Callable[[], float]) -> bool:
        """Record update n from its metrics m (loss, lr, grad_norm, norms when with_norms(n)); evaluate()
        gives the validation loss at a horizon. False when the run has just diverged (it is finished)."""
        run = self.cfg.run
        loss = float(m["loss"])
        if n == 1:
            self.initial_loss = loss
        row = {"step": n, "tokens": n * self.tokens_per_step, "train_loss": loss, "lr": float(m["lr"]),
               "grad_norm": float(m["grad_norm"])}
        if not math.isfinite(loss) or loss > run.diverge_factor * self.initial_loss:
            self.status, self.diverged_step = "diverged", n
            self.reason = "non-finite loss" if not math.isfinite(loss) else \
                f"loss {loss:.4g} > {run.diverge_factor} x initial loss {self.initial_loss:.4g}"
            self.log.append(row)
            self.last_row = row
            return False
        if self.with_norms(n):
            row.update(flatten_for_log({k: v for k, v in m.items() if "/" in k}))
        if n in self.horizons:
            row["val_loss"] = float(evaluate())
            self.val_losses.append(row["val_loss"])
        if n % run.log_every == 0 or self.with_norms(n) or n in self.horizons:
            self.log.append(row)
            self.last_row = row
        return True

    def should_save(self, n: int, stop: bool) -> bool:
        every = self.cfg.run.checkpoint_every
        return bool(every and n % every == 0) or n == self.cfg.run.steps or stop

    def save(self, n: int, params: Any, opt_state: Any) -> None:
        elapsed = self.elapsed_before + time.time() - self.t_start
        self.ckpt.save(n, {"params": params, "opt_state": opt_state, "step": jnp.int32(n),
                           "initial_loss": jnp.float32(self.initial_loss), "elapsed_s": jnp.float32(elapsed)})

    def close(self) -> None:
        self.log.close()
        self.ckpt.close()

    def finish(self) -> dict:
        """Write summary.json (atomically, last) and return it."""
        last, status = self.last_row, self.status
        summary = {
            "status": status,
            "steps": last.get("step", 0),
            "tokens": last.get("tokens", 0),
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": last.get("val_loss") if status == "done" else None,
            "best_val_loss": min(self.val_losses) if self.val_losses else None,
            "initial_loss": self.initial_loss,
            "wall_time_s": self.elapsed_before + time.time() - self.t_start,
            "diverged_step": self.diverged_step,
            "diverge_reason": self.reason,
            **{k: v for k, v in json.loads((self.out / "config.json").read_text())["_meta"].items()
               if k.startswith("n_params") or k == "flops_per_token"},
        }
        write_json_atomic(self.out / "summary.json", summary)
        return summary


EVAL_CHUNK_TOKENS = 16_384  # tokens per evaluation forward pass when run.eval_batch_size is 0


def validation_sizes(cfg: Config) -> tuple[int, int]:
    """(sequences in the validation set, sequences per evaluation chunk): ceil(eval_tokens / context)
    and run.eval_batch_size (0: EVAL_CHUNK_TOKENS // context), neither depending on run.batch_size."""
    run, T = cfg.run, cfg.model.context
    n = max(1, -(-run.eval_tokens // T))
    chunk = run.eval_batch_size or max(1, EVAL_CHUNK_TOKENS // T)
    return n, min(n, chunk)


def validation_batches(dataset: data_lib.Dataset, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The fixed validation set of (dataset, model.context, run.eval_tokens, run.eval_seed) as
    ((C, N, T+1) full chunks, (R, T+1) rest), R < N: the same sequences for every run.batch_size and
    run.data_seed, so every run of a sweep is scored on the same data (Trainer._evaluate)."""
    run, T = cfg.run, cfg.model.context
    n, chunk = validation_sizes(cfg)
    seqs = data_lib.batch(dataset.val, run.eval_seed, 0, n, T + 1, data_lib.VAL)
    full = n // chunk * chunk
    return seqs[:full].reshape(n // chunk, chunk, T + 1), seqs[full:]


def _run(cfg: Config, trainer: Trainer, dataset: data_lib.Dataset, out: Path, progress: bool,
         should_stop: Callable[[], bool] | None) -> dict:
    run = cfg.run
    B, T = run.batch_size, cfg.model.context
    rec = RunRecord(cfg, out)
    params, opt_state = rec.restore(*trainer.init_state(jax.random.PRNGKey(run.seed), cfg))
    hp = trainer.hyper_values(cfg)
    val_batches = validation_batches(dataset, cfg)
    if rec.start == 0:
        rec.log_initial(float(trainer.evaluate(params, val_batches)), trainer.param_norms(params))
    bar = _progress_bar(progress, run.steps, rec.start)
    try:
        for s in range(rec.start, run.steps):
            n = s + 1
            tokens_BxT1 = data_lib.batch(dataset.train, run.data_seed, s, B, T + 1)
            params, opt_state, m = trainer.step(params, opt_state, tokens_BxT1, jnp.int32(s), rec.with_norms(n), hp)
            if not rec.after_step(n, m, lambda: trainer.evaluate(params, val_batches)):
                break
            if bar is not None:
                bar.advance(n, float(m["loss"]), rec.tokens_per_step)
            stop = should_stop is not None and should_stop()
            if rec.should_save(n, stop):
                rec.save(n, params, opt_state)
            if stop and n < run.steps:
                return {"status": "preempted", "steps": n}
    finally:
        rec.close()
        if bar is not None:
            bar.close()
    return rec.finish()


class _Bar:
    """A rich progress bar showing loss and tokens/s."""

    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s"),
                                 TimeRemainingColumn())
        self.task = self.progress.add_task("train", total=total, completed=start, loss=float("nan"), tps=0.0)
        self.t0, self.start = time.time(), start
        self.progress.start()

    def advance(self, step: int, loss: float, tokens_per_step: int) -> None:
        tps = (step - self.start) * tokens_per_step / max(time.time() - self.t0, 1e-9)
        self.progress.update(self.task, completed=step, loss=loss, tps=tps)

    def close(self) -> None:
        self.progress.stop()


def _progress_bar(enabled: bool, total: int, start: int) -> _Bar | None:
    return _Bar(total, start) if enabled else None


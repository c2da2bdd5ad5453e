"""One run directory's files and the host-side bookkeeping that writes them.

Row semantics: a row with step s was written after s optimizer updates (tokens = s·B·T).
`train_loss` is the loss of the batch that update s was computed on (the model after s-1 updates),
`val_loss` is measured on the fixed validation set (`validation_batches`: the same sequences for every
batch size and data seed) with the model after s updates; `val_bpb` beside it is the same loss in bits
per byte (`bits_per_byte`) where the data's bytes per token are known (config.json _meta
val_bytes_per_token), and is left out where they are not (synthetic data, token files without a
meta.json); summary.json's final_val_bpb / best_val_bpb are then null. A diverged run's metrics.jsonl
ends with the row of its diverged step (no validation loss, no norms); `logged_steps` lists the rows a
run holds.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import optax

from scaling import data as data_lib
from scaling import models
from scaling.checkpoint import Checkpointer
from scaling.config import Config
from scaling.logs import MetricsLog, write_json_atomic
from scaling.norm_log import flatten_for_log
from scaling.trackers import Tracking, metrics_log


class OwnershipLost(RuntimeError):
    """The driver says this process no longer owns the run directory (its lease went to another worker):
    nothing more is written to it."""


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


def bits_per_byte(loss: float, bytes_per_token: float | None) -> float | None:
    """A loss in nats per token as bits per UTF-8 byte: loss / ln 2 / bytes per token, comparable across
    tokenizers (Paloma, Magnusson et al. 2023; marin); None where bytes per token are unknown."""
    if not bytes_per_token or loss is None:
        return None
    return loss / math.log(2) / bytes_per_token


def run_meta(cfg: Config, specs: Any, dataset: data_lib.Dataset | None = None) -> dict:
    """config.json's _meta: sizes, versions, and the data's bytes per validation token (bits per byte)."""
    data = {}
    if dataset is not None:
        data["val_bytes_per_token"] = dataset.val_bytes_per_token
        if dataset.tokenizer_sha256:
            data["tokenizer_sha256"] = dataset.tokenizer_sha256
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {**models.count_params(specs), "flops_per_token": models.flops_per_token(cfg.model, specs),
            "git_sha": sha, "jax": jax.__version__, "optax": optax.__version__, "host": platform.node(),
            "backend": jax.default_backend(), **data}


def _recorded_bytes_per_token(out: Path) -> float | None:
    try:
        return json.loads((out / "config.json").read_text())["_meta"].get("val_bytes_per_token")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class RunRecord:
    """Host-side bookkeeping of one run directory: checkpoints, metrics rows, evaluation horizons, the
    divergence test and the summary. The loop (scaling.train) keeps one per member, so a run's files do
    not depend on how many runs it was trained with."""

    def __init__(self, cfg: Config, out: Path, may_write: Callable[[], bool] | None = None,
                 tracking: Tracking | None = None, primary: bool = True):
        """may_write: asked before every write of the run's files (metrics, checkpoints, summary); False
        raises OwnershipLost (a driver's fencing check: the run's lease is still this process's).
        tracking: tracker mirrors of metrics.jsonl (scaling.trackers; None: none). primary=False (the
        processes other than 0 of a multi-process run): the same bookkeeping, from the same metrics,
        but only checkpoint shards are written (scaling.checkpoint); metrics and summary are process 0's."""
        run = cfg.run
        self.cfg, self.out = cfg, out
        self.may_write = may_write or (lambda: True)
        self.tokens_per_step = run.batch_size * cfg.model.context
        self.horizons = set(eval_steps(run.steps, run.eval_per_octave))
        self.norms_every = run.norms_every or run.log_every
        self.primary = primary
        self.ckpt = Checkpointer(out / "ckpt", primary=primary)
        self.log = (metrics_log(out / "metrics.jsonl", tracking, cfg) if primary  # mirrored to the trackers
                    else MetricsLog(out / "metrics.jsonl", writable=False))
        self.status, self.reason, self.diverged_step = "done", None, None
        self.start, self.initial_loss, self.elapsed_before = 0, math.nan, 0.0
        self.val_losses: list[float] = []
        self.bytes_per_token = _recorded_bytes_per_token(out)  # as the run's first start recorded it
        self.last_row: dict = {}
        self.t_start = time.time()

    def restore(self, state: Any) -> Any:
        """The newest readable checkpoint's train state, or the given initial one (a TrainState: params and
        opt_state, saved as they are); metrics.jsonl is cut back to the restored step."""
        saved = {"params": state.params, "opt_state": state.opt_state, **checkpoint_scalars(0, math.nan, 0.0)}
        self.fence("checkpoints and metrics")  # restoring may set a checkpoint aside and cuts metrics back
        restored = self.ckpt.restore_latest(saved)
        if restored is not None:
            saved = restored[1]
        self.start = int(saved["step"])
        self.initial_loss, self.elapsed_before = float(saved["initial_loss"]), float(saved["elapsed_s"])
        rows = self.log.restart_at(self.start if self.start > 0 else -1)  # from scratch: step 0 is redone
        self.val_losses = [r["val_loss"] for r in rows if isinstance(r.get("val_loss"), (int, float))]
        self.last_row = rows[-1] if rows else {}
        self.t_start = time.time()
        return state.replace(params=saved["params"], opt_state=saved["opt_state"])

    def fence(self, what: str) -> None:
        if not self.may_write():
            raise OwnershipLost(f"{self.out}: this process no longer owns the run; not writing its {what}")

    def append(self, row: dict) -> None:
        self.fence("metrics")
        self.log.append(row)

    def log_initial(self, val_loss: float, param_norms: dict) -> None:
        self.last_row = {"step": 0, "tokens": 0, "val_loss": val_loss, **self._bpb(val_loss),
                         **flatten_for_log(param_norms)}
        self.append(self.last_row)
        self.val_losses.append(val_loss)

    def _bpb(self, val_loss: float) -> dict:
        """{"val_bpb": ...} beside a validation loss, or {} where bytes per token are unknown."""
        bpb = bits_per_byte(val_loss, self.bytes_per_token)
        return {} if bpb is None else {"val_bpb": bpb}

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
            self.append(row)
            self.last_row = row
            return False
        if self.with_norms(n):
            row.update(flatten_for_log({k: v for k, v in m.items() if "/" in k}))
        if n in self.horizons:
            row["val_loss"] = float(evaluate())
            row.update(self._bpb(row["val_loss"]))
            self.val_losses.append(row["val_loss"])
        if n % run.log_every == 0 or self.with_norms(n) or n in self.horizons:
            self.append(row)
            self.last_row = row
        return True

    def should_save(self, n: int, stop: bool) -> bool:
        every = self.cfg.run.checkpoint_every
        return bool(every and n % every == 0) or n == self.cfg.run.steps or stop

    def save(self, n: int, state: Any) -> None:
        elapsed = self.elapsed_before + time.time() - self.t_start
        self.fence(f"checkpoint of step {n}")
        self.ckpt.save(n, {"params": state.params, "opt_state": state.opt_state,
                           **checkpoint_scalars(n, self.initial_loss, elapsed)})

    def close(self) -> None:
        self.log.close()
        self.ckpt.close()

    def finish(self) -> dict:
        """Write summary.json (atomically, last) and return it."""
        last, status = self.last_row, self.status
        final_val = last.get("val_loss") if status == "done" else None
        best_val = min(self.val_losses) if self.val_losses else None
        summary = {
            "status": status,
            "steps": last.get("step", 0),
            "tokens": last.get("tokens", 0),
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": final_val,
            "best_val_loss": best_val,
            "final_val_bpb": bits_per_byte(final_val, self.bytes_per_token),
            "best_val_bpb": bits_per_byte(best_val, self.bytes_per_token),
            "initial_loss": self.initial_loss,
            "wall_time_s": self.elapsed_before + time.time() - self.t_start,
            "diverged_step": self.diverged_step,
            "diverge_reason": self.reason,
            **{k: v for k, v in json.loads((self.out / "config.json").read_text())["_meta"].items()
               if k.startswith("n_params") or k == "flops_per_token"},
        }
        self.fence("summary")
        if self.primary:
            write_json_atomic(self.out / "summary.json", summary)
        return summary


def checkpoint_scalars(step: int, initial_loss: float, elapsed_s: float) -> dict:
    """A checkpoint's host scalars, as numpy values: orbax writes those once (from process 0), where a
    one-device jax array would be written by every process of a multi-process job."""
    return {"step": np.asarray(step, np.int32), "initial_loss": np.asarray(initial_loss, np.float32),
            "elapsed_s": np.asarray(elapsed_s, np.float32)}



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
    run.data_seed, so every run of a sweep is scored on the same data (Program.evaluate_fn)."""
    run, T = cfg.run, cfg.model.context
    n, chunk = validation_sizes(cfg)
    seqs = data_lib.batch(dataset.val, run.eval_seed, 0, n, T + 1, data_lib.VAL)
    full = n // chunk * chunk
    return seqs[:full].reshape(n // chunk, chunk, T + 1), seqs[full:]



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


def progress_bar(enabled: bool, total: int, start: int) -> _Bar | None:
    return _Bar(total, start) if enabled else None


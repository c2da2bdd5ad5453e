"""Train runs: `train(config, out_dir) -> summary`, and `train_runs(configs, out_dirs)` for K >= 1 runs that
share one compiled program (`batch_key`), trained together as the K = 1 or K > 1 case of one loop.

Each run writes into its own out_dir: config.json (resolved, with _meta), metrics.jsonl (one object per
logged step), ckpt/ (orbax), and summary.json last and atomically (scaling.record). Rerunning on the same
directory resumes from the newest readable checkpoint; since batches are a pure function of (data seed,
step), the resumed metrics are bit-identical to an uninterrupted run on CPU. A diverged run is data: it
ends with summary status "diverged", the step and the reason.

One loop for every K (scaling.program: plain jit at K = 1, jit(vmap) over the run axis at K > 1). Members
differ only in hyperparameter values (scaling.hyper) and seeds; at K > 1 their files match training each
alone to floating-point tolerance (vmapped matmuls may sum in another order). A member that diverges is
finished and recorded at once; the program keeps computing its lane (shapes are fixed) but nothing of it
is logged any more, and the others go on. Members must start at the same step (all fresh, or all resumed
from checkpoints of the same step): `MembersOutOfStep` is raised otherwise, before anything is written.

Dispatch-ahead: the host dispatches update n+1 before it reads update n's metrics, so logging, the
divergence test and the next batch overlap the device's work. Divergence is seen one update late; the
extra update is discarded (never logged or saved), so the recorded diverged step and the files are those
of a loop that waited. Evaluation horizons (geometric, so rare), checkpoints and preemption wait for
their step's record before the next update is dispatched. On CPU batching is usually slower than running the members one
after another (benchmarks/README.md, "Sweeps"): it pays on accelerators, where one small run leaves the
device idle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from scaling import data as data_lib
from scaling import hyper
from scaling.config import Config, ConfigError, ModelConfig, to_dict
from scaling.distributed import is_primary
from scaling.identity import check_same_run
from scaling.logs import FINAL_STATES, write_json_atomic
from scaling.models import count_params, param_specs
from scaling.program import Program, TrainState, get_program
from scaling.record import (OwnershipLost, RunRecord, eval_steps, logged_steps, progress_bar, run_meta,
                            validation_batches)
from scaling.trackers import Tracking

__all__ = ["train", "train_runs", "batch_key", "MembersOutOfStep", "OwnershipLost", "eval_steps", "logged_steps",
           "validation_batches", "FINAL_STATES"]

_SCALARS = ("loss", "lr", "grad_norm")  # the metrics read every step (the rest only on norm steps)
STATE_COPIES = 3  # float32 per parameter: itself and two moments (AdamW's: no optimizer keeps more)
SIZE_FIELDS = ("width", "depth", "vocab_size", "mlp_ratio", "n_heads", "head_dim", "window")  # model.* that size it


class MembersOutOfStep(ValueError):
    """The runs of a batch would resume from different steps."""


def batch_key(cfg: Config) -> tuple:
    """Runs with equal keys can be trained together: same compiled step, same loop (steps, logging,
    evaluation, checkpoints) and same data source; the init and data seeds may differ (the validation
    set, run.eval_tokens and run.eval_seed, is part of the key: members share it). A run on a mesh
    (run.mesh) trains alone: its key is its whole config."""
    if cfg.run.mesh.size > 1:
        return (cfg,)
    run = dataclasses.replace(cfg.run, seed=0, data_seed=0)
    return hyper.program_config(cfg), run, cfg.data


def train(cfg: Config, out_dir: str | Path, *, progress: bool = False,
          should_stop: Callable[[], bool] | None = None, tracking: Tracking | None = None) -> dict:
    """Train (or resume, or return the finished summary of) the run in out_dir."""
    return train_runs([cfg], [out_dir], progress=progress, should_stop=should_stop, tracking=[tracking])[0]


def train_runs(cfgs: list[Config], out_dirs: list[str | Path], *, progress: bool = False,
               should_stop: Callable[[], bool] | None = None,
               may_write: Callable[[int], bool] | None = None,
               tracking: list[Tracking | None] | None = None) -> list[dict]:
    """Train (or resume, or return the finished summaries of) runs with one batch_key together; one
    summary (or {"status": "preempted", "steps": n}) per run, in order. may_write(i), asked before every
    write to out_dirs[i], is a driver's fencing check: False raises OwnershipLost and nothing more is written.
    tracking[i]: the tracker mirrors of run i's metrics (scaling.trackers; None: none), not part of the run."""
    if len(cfgs) != len(out_dirs) or not cfgs or (tracking is not None and len(tracking) != len(cfgs)):
        raise ValueError("train_runs needs one output directory (and tracking, if given) per config")
    meshed = [c.run.mesh for c in cfgs if c.run.mesh.size > 1]
    if len(cfgs) > 1 and meshed:
        raise ConfigError(f"run.mesh={dataclasses.asdict(meshed[0])}: runs on a mesh train one at a time, not "
                          f"{len(cfgs)} batched together (scaling.program); train them one by one")
    if len(cfgs) > 1 and len({batch_key(c) for c in cfgs}) > 1:
        raise ValueError("train_runs: the configs differ in more than scalar hyperparameters and seeds")
    outs = [Path(d) for d in out_dirs]
    results: list[dict | None] = [_finished_summary(cfg, out) for cfg, out in zip(cfgs, outs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results  # type: ignore[return-value]
    cfg0 = cfgs[todo[0]]
    check_fits_in_memory(cfg0, members=len(todo))  # input errors before any allocation or write
    primary = check_processes(cfg0)
    dataset = data_lib.load_dataset(cfg0.data, cfg0.model.vocab_size)
    data_lib.require_sequences(dataset, cfg0.data, cfg0.model.context + 1)
    program = get_program(cfg0)
    records, states = [], []
    for i in todo:
        owned = None if may_write is None else (lambda i=i: may_write(i))
        outs[i].mkdir(parents=True, exist_ok=True)
        if primary and not (outs[i] / "config.json").exists():
            if owned is not None and not owned():
                raise OwnershipLost(f"{outs[i]}: this process no longer owns the run; not writing its config.json")
            write_json_atomic(outs[i] / "config.json",
                              {**to_dict(cfgs[i]), "_meta": run_meta(cfgs[i], program.specs, dataset)})
        check_shared_directory(outs[i])
        records.append(RunRecord(cfgs[i], outs[i], may_write=owned, tracking=tracking[i] if tracking and primary
                                 else None, primary=primary))
        states.append(records[-1].restore(program.init_state(jax.random.PRNGKey(cfgs[i].run.seed), cfgs[i])))
    bar = progress_bar(progress and primary and len(todo) == 1, cfg0.run.steps, records[0].start)
    try:
        if len({r.start for r in records}) > 1:
            raise MembersOutOfStep(f"runs resume from steps {[r.start for r in records]}; train them one by one")
        summaries = _loop(program, [cfgs[i] for i in todo], records, states, dataset, should_stop, bar)
    finally:
        for rec in records:
            rec.close()
        if bar is not None:
            bar.close()
    for i, summary in zip(todo, summaries):
        results[i] = summary
    return results  # type: ignore[return-value]


def check_processes(cfg: Config) -> bool:
    """Whether this process writes the run's files. In a jax.distributed job of several processes
    (scaling.distributed) one run spans every device of every process, each process drives the same loop on
    the same host values (batches are a pure function of seed and step) and places its own slices of each
    (Layout.put); metrics are replicated, so every process takes the same decisions (divergence, horizons,
    checkpoints) and only process 0 writes metrics, summary and digests. Checkpoints are written by all."""
    if jax.process_count() == 1:
        return True
    if cfg.run.mesh.size != jax.device_count():
        raise ConfigError(f"run.mesh={dataclasses.asdict(cfg.run.mesh)} has {cfg.run.mesh.size} devices; a job of "
                          f"{jax.process_count()} processes trains one run over all {jax.device_count()} of its devices")
    return is_primary()


def check_shared_directory(out: Path) -> None:
    """In a job of several processes, refuse (on every process at once, so none waits in a collective)
    a run directory that some process does not see process 0's config.json in: checkpoints are written
    by every process into one directory, which must be on a filesystem all hosts share."""
    if jax.process_count() == 1:
        return
    multihost_utils.sync_global_devices("scaling-config-written")  # process 0 has written it by now
    seen = multihost_utils.process_allgather(np.int32((out / "config.json").exists()))
    if not seen.all():
        blind = [int(p) for p in np.flatnonzero(seen == 0)]
        raise ConfigError(f"{out}: process(es) {blind} do not see the config.json process 0 wrote there; a run over "
                          "several hosts needs its directory on a filesystem they all share")


def check_fits_in_memory(cfg: Config, members: int = 1) -> None:
    """Refuse, naming the model's size fields, runs whose float32 parameters and optimizer state alone
    exceed the host's physical memory: found out at init, they would end in a JAX allocation traceback
    after config.json and ckpt/ are written. Host memory bounds accelerator runs too: checkpoints pass
    through it. The estimate is a floor (no gradients, no activations); the shapes cost no memory."""
    n = count_params(param_specs(cfg.model, cfg.param))["n_params"]
    need = members * n * 4 * STATE_COPIES
    have = physical_memory_bytes()
    if need <= have:
        return
    default = ModelConfig()
    named = [f"model.{f}={getattr(cfg.model, f)}" for f in SIZE_FIELDS if getattr(cfg.model, f) != getattr(default, f)]
    runs = f" x {members} runs" if members > 1 else ""
    raise ConfigError(f"{', '.join(named) or 'model'}: {n:.3g} parameters{runs} need ~{need / 2**30:.3g} GiB of "
                      f"float32 parameters and optimizer state, more than this machine's {have / 2**30:.3g} GiB "
                      "of memory")


def physical_memory_bytes() -> int:
    """The host's physical memory, or a fixed 1 TiB where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def _finished_summary(cfg: Config, out: Path) -> dict | None:
    """The summary of a finished run in out (after refusing a directory that holds another run), else None."""
    if not (out / "config.json").exists():
        return None
    check_same_run(out / "config.json", to_dict(cfg))
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None  # none yet, or torn: rewritten when the run finishes
    return summary if isinstance(summary, dict) and summary.get("status") in FINAL_STATES else None


def _member(tree: Any, k: int, members: int) -> Any:
    """Member k's slice of a tree with a leading run axis (at K = 1 there is no run axis)."""
    return tree if members == 1 else jax.tree_util.tree_map(lambda x: x[k], tree)


def _loop(program: Program, cfgs: list[Config], records: list[RunRecord], states: list[TrainState],
          dataset: data_lib.Dataset, should_stop: Callable[[], bool] | None, bar) -> list[dict]:
    K, run, rec0 = len(cfgs), cfgs[0].run, records[0]
    B, T = run.batch_size, cfgs[0].model.context
    data_seeds = [c.run.data_seed for c in cfgs]
    per_member_data = len(set(data_seeds)) > 1
    fn = program.compiled(K, per_member_data)
    if K == 1:
        state, hp = states[0], program.hyper_values(cfgs[0])
    else:
        state = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
        values = [program.hyper_values(c) for c in cfgs]
        hp = {f: jnp.stack([v[f] for v in values]) for f in program.fields}
    val = validation_batches(dataset, cfgs[0])  # the same for every member (batch_key)
    if rec0.start == 0:
        val0, norms0 = jax.device_get((fn.evaluate(state.params, val), fn.norms(state.params)))
        for k, rec in enumerate(records):
            rec.log_initial(float(_member(val0, k, K)), _member(norms0, k, K))
    active = [True] * K
    summaries: list[dict | None] = [None] * K

    def record(n: int, metrics: dict, val_loss: Any) -> None:
        """Host side of update n: read its metrics (blocks until it is done), log, test divergence."""
        host = jax.device_get(metrics if rec0.with_norms(n) else {k: metrics[k] for k in _SCALARS})
        evaluated: dict[str, np.ndarray] = {}

        def evaluate(k: int) -> float:  # one evaluation per horizon, shared by the members
            if "v" not in evaluated:
                evaluated["v"] = np.asarray(jax.device_get(val_loss))
            return float(_member(evaluated["v"], k, K))

        for k, rec in enumerate(records):
            if active[k] and not rec.after_step(n, _member(host, k, K), lambda k=k: evaluate(k)):
                active[k] = False
                summaries[k] = rec.finish()  # diverged: final now, whatever happens to the others
        if bar is not None:
            bar.advance(n, float(host["loss"]), rec0.tokens_per_step)

    pending: tuple | None = None  # (n, metrics, validation loss) of the update not yet recorded
    for s in range(rec0.start, run.steps):
        n = s + 1
        if per_member_data:
            tokens = np.stack([data_lib.batch(dataset.train, d, s, B, T + 1) for d in data_seeds])
        else:
            tokens = data_lib.batch(dataset.train, data_seeds[0], s, B, T + 1)
        state, metrics = fn.step(state, tokens, jnp.int32(s), rec0.with_norms(n), hp)
        horizon = n in rec0.horizons
        val_loss = fn.evaluate(state.params, val) if horizon else None
        if pending is not None:  # update n-1, while update n runs
            record(*pending)
            pending = None
            if not any(active):
                break  # every member diverged at n-1: update n is discarded
        stop = should_stop is not None and should_stop()
        pending = (n, metrics, val_loss)
        # A horizon, a checkpoint, the last step and a stop wait for their record, so no evaluation or
        # save still reads this state when the next update donates its buffers.
        save = rec0.should_save(n, stop)
        if horizon or save:
            record(*pending)
            pending = None
            if not any(active):
                break
        if save:
            for k, rec in enumerate(records):
                if active[k]:
                    rec.save(n, _member(state, k, K))
        if stop and n < run.steps:
            return [s_ if s_ is not None else {"status": "preempted", "steps": n} for s_ in summaries]
    return [s_ if s_ is not None else rec.finish() for s_, rec in zip(summaries, records)]

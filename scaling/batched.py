"""Train K runs in one compiled program: jax.vmap over the run axis of the shared train step.

Runs can share a program when they differ only in scalar hyperparameters (learning rates, per-role
multipliers, weight decay, betas, momentum; scaling.hyper) and in seeds (init and data). Each member
keeps its own directory, checkpoints, metrics rows and summary, written by the same RunRecord as
scaling.train.train, so its files match training it alone to floating-point tolerance (vmapped matmuls
may sum in another order). A member that diverges is finished and recorded at once; the program keeps
computing its lane (shapes are fixed) but nothing of it is logged any more, and the others go on.

Members must start at the same step (all fresh, or all resumed from checkpoints of the same step);
`MembersOutOfStep` is raised otherwise, before anything is written, so the caller can train them
one at a time. On CPU batching is usually slower than running the members one after another (see
benchmarks/README.md, "Sweeps"): it pays on accelerators, where one small run leaves the device idle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from scaling import data as data_lib
from scaling import hyper
from scaling.config import Config, to_dict
from scaling.logs import write_json_atomic
from scaling.train import (FINAL_STATES, RunRecord, Trainer, _check_same_run, _meta, get_trainer,
                           validation_batches)


class MembersOutOfStep(ValueError):
    """The runs of a batch would resume from different steps."""


def batch_key(cfg: Config) -> tuple:
    """Runs with equal keys can be trained in one vmapped program: same compiled step, same loop (steps,
    logging, evaluation, checkpoints) and same data source; the init and data seeds may differ (the
    validation set, run.eval_tokens and run.eval_seed, is part of the key: members share it)."""
    run = dataclasses.replace(cfg.run, seed=0, data_seed=0)
    return hyper.program_config(cfg), run, cfg.data


def _stack(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _vmapped(trainer: Trainer, per_member_data: bool) -> tuple[Callable, Callable, Callable]:
    """(step, evaluate, param_norms) over a leading run axis, cached on the trainer (one compilation per
    number of members). Members share one validation set (validation_batches does not depend on the data
    seed, and batch_key keeps run.eval_* apart), so evaluate broadcasts it."""
    cache = trainer.__dict__.setdefault("_vmapped", {})
    if per_member_data not in cache:
        data_axis = 0 if per_member_data else None
        step = jax.jit(jax.vmap(trainer._step, in_axes=(0, 0, data_axis, None, None, 0)), donate_argnums=(0, 1))
        evaluate = jax.jit(jax.vmap(trainer._evaluate, in_axes=(0, None)))
        norms = jax.jit(jax.vmap(trainer.param_norms))
        cache[per_member_data] = (step, evaluate, norms)
    return cache[per_member_data]


def train_batched(cfgs: list[Config], out_dirs: list[str | Path], *,
                  should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """Train (or resume, or return the finished summaries of) several runs together; one summary (or
    {"status": "preempted", "steps": n}) per run, in order."""
    if len(cfgs) != len(out_dirs) or not cfgs:
        raise ValueError("train_batched needs one output directory per config")
    keys = {batch_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ValueError("train_batched: the configs differ in more than scalar hyperparameters and seeds")
    outs = [Path(d) for d in out_dirs]
    results: list[dict | None] = [None] * len(cfgs)
    for i, (cfg, out) in enumerate(zip(cfgs, outs)):  # finished members return at once, as in train()
        if (out / "config.json").exists():
            _check_same_run(out / "config.json", to_dict(cfg))
            try:
                summary = json.loads((out / "summary.json").read_text())
                if summary.get("status") in FINAL_STATES:
                    results[i] = summary
            except (OSError, json.JSONDecodeError):
                pass
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results  # type: ignore[return-value]
    cfg0 = cfgs[todo[0]]
    dataset = data_lib.load_dataset(cfg0.data, cfg0.model.vocab_size)
    trainer = get_trainer(cfg0)
    records, params, opt_states = [], [], []
    for i in todo:
        outs[i].mkdir(parents=True, exist_ok=True)
        if not (outs[i] / "config.json").exists():
            write_json_atomic(outs[i] / "config.json", {**to_dict(cfgs[i]), "_meta": _meta(cfgs[i], trainer.specs)})
        rec = RunRecord(cfgs[i], outs[i])
        p, o = rec.restore(*trainer.init_state(jax.random.PRNGKey(cfgs[i].run.seed), cfgs[i]))
        records.append(rec)
        params.append(p)
        opt_states.append(o)
    try:
        if len({r.start for r in records}) > 1:
            raise MembersOutOfStep(f"runs resume from steps {[r.start for r in records]}; train them one by one")
        summaries = _loop([cfgs[i] for i in todo], records, _stack(params), _stack(opt_states), trainer,
                          dataset, should_stop)
    finally:
        for rec in records:
            rec.close()
    for i, summary in zip(todo, summaries):
        results[i] = summary
    return results  # type: ignore[return-value]


def _loop(cfgs: list[Config], records: list[RunRecord], params: Any, opt_state: Any, trainer: Trainer,
          dataset: data_lib.Dataset, should_stop: Callable[[], bool] | None) -> list[dict]:
    run = cfgs[0].run
    B, T, K = run.batch_size, cfgs[0].model.context, len(cfgs)
    data_seeds = [c.run.data_seed for c in cfgs]
    per_member_data = len(set(data_seeds)) > 1
    step_fn, evaluate_fn, norms_fn = _vmapped(trainer, per_member_data)
    hp = {f: jnp.stack([v[f] for v in (trainer.hyper_values(c) for c in cfgs)]) for f in trainer.fields}
    val = validation_batches(dataset, cfgs[0])  # the same for every member (batch_key)
    start = records[0].start
    if start == 0:
        val0, norms0 = jax.device_get((evaluate_fn(params, val), norms_fn(params)))
        for k, rec in enumerate(records):
            rec.log_initial(float(val0[k]), _member(norms0, k))
    active = [True] * K
    summaries: list[dict | None] = [None] * K
    vals: dict[str, Any] = {}

    def evaluate(k: int) -> float:  # one vmapped evaluation per horizon, shared by the members
        if "v" not in vals:
            vals["v"] = np.asarray(evaluate_fn(params, val))
        return float(vals["v"][k])

    for s in range(start, run.steps):
        n = s + 1
        if per_member_data:
            tokens = np.stack([data_lib.batch(dataset.train, d, s, B, T + 1) for d in data_seeds])
        else:
            tokens = data_lib.batch(dataset.train, data_seeds[0], s, B, T + 1)
        with_norms = records[0].with_norms(n)
        params, opt_state, m = step_fn(params, opt_state, tokens, jnp.int32(s), with_norms, hp)
        host = jax.device_get(m if with_norms else {k: m[k] for k in ("loss", "lr", "grad_norm")})
        vals.clear()
        for k, rec in enumerate(records):
            if active[k] and not rec.after_step(n, _member(host, k), lambda k=k: evaluate(k)):
                active[k] = False
                summaries[k] = rec.finish()  # diverged: final now, whatever happens to the others
        if not any(active):
            break
        stop = should_stop is not None and should_stop()
        if records[0].should_save(n, stop):
            for k, rec in enumerate(records):
                if active[k]:
                    rec.save(n, _member(params, k), _member(opt_state, k))
        if stop and n < run.steps:
            return [s_ if s_ is not None else {"status": "preempted", "steps": n} for s_ in summaries]
    return [s_ if s_ is not None else rec.finish() for s_, rec in zip(summaries, records)]

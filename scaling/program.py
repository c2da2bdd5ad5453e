"""The compiled program of a run: train step, evaluation and parameter norms for one program config.

A `Program` is everything that is compiled for a program config (scaling.hyper): runs that differ only in
hyperparameter values and seeds share one Program and its compilations. `compiled(K, per_member_data)`
gives the functions for K runs trained together: plain `jit` at K = 1, `jit(vmap)` over a leading run
axis at K > 1 (members share the validation set, so evaluation broadcasts it; the batch is shared unless
the members' data seeds differ).

With a mesh (run.mesh, scaling.sharding) the K = 1 functions are jitted with the layout's shardings: the
state (params and optimizer state) sharded from the specs' logical axes and donated, the batch split over
the batch rule, metrics replicated; they are traced and run under Layout.activate, so the optimizers'
whole-matrix operations find their owners (sharding.per_matrix). Batched members (K > 1) on a mesh are
refused. A one-device mesh (the default) compiles exactly the unsharded program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling import hyper, models, parametrization, sharding
from scaling.config import Config
from scaling.norm_log import norm_metrics
from scaling.optim import build_optimizer, leaf_learning_rates
from scaling.schedules import make_schedule


@flax.struct.dataclass
class TrainState:
    """What one update changes (a pytree; at K > 1 every leaf has a leading run axis)."""

    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The compiled functions of K members: step(state, tokens, step, with_norms, hp) -> (state, metrics)
    (state donated), evaluate(params, val) -> mean validation loss, norms(params) -> norm metrics."""

    step: Callable
    evaluate: Callable
    norms: Callable


class Program:
    def __init__(self, program: Config):
        self.cfg = program
        self.fields = hyper.fields(program)
        self.specs = models.param_specs(program.model, program.param)
        self.schedule = make_schedule(program.run)
        self.compute_dtype = jnp.bfloat16 if program.run.compute_dtype == "bfloat16" else None
        # the optimizer's state layout depends only on the program (never on hyperparameter values)
        self._init_tx = build_optimizer(program.optim, self.specs,
                                        parametrization.lr_multipliers(self.specs, program.param, program.optim),
                                        self.schedule)
        self._compiled: dict[tuple[bool, bool], Compiled] = {}
        self.layout = sharding.layout_of(program.run)  # None: one device

    def hyper_values(self, cfg: Config) -> dict:
        return hyper.values(cfg)

    def init_state(self, key: jax.Array, cfg: Config) -> TrainState:
        """The run's initial parameters (its own init scales and seed) and optimizer state."""
        def build(key):
            params, _ = models.init(cfg.model, key, cfg.param, cfg.optim)
            return TrainState(params, self._init_tx.init(params))

        if self.layout is None:
            return build(key)
        # Built in place on the mesh (each device computes only its shards) from a key every process
        # holds: nothing is placed from one device, which neither fits large models nor spans processes.
        return jax.jit(build, out_shardings=self._state_layout)(np.asarray(key))

    @functools.cached_property
    def _state_layout(self) -> TrainState:
        """The shardings of the (K = 1) train state on the layout's mesh (its shapes are the program's)."""
        return self.state_shardings(jax.eval_shape(lambda: TrainState(*self._abstract_state())))

    def state_shardings(self, state: TrainState) -> TrainState:
        """The layout's sharding of every leaf of a (K = 1) train state."""
        return self.layout.state_shardings(state, self.specs)

    def for_compute(self, params):
        """The params the forward pass reads: as they are on one device; on a mesh gathered over the batch
        axes (Layout.compute_spec), so activations stay split by batch and gradients are reduce-scattered."""
        return params if self.layout is None else self.layout.gather_for_compute(params, self.specs)

    def loss(self, params, tokens_BxT1):
        return models.loss_fn(self.cfg.model, params, tokens_BxT1, param=self.cfg.param,
                              compute_dtype=self.compute_dtype)

    def step_fn(self, state: TrainState, tokens_BxT1, step, with_norms, hp: dict) -> tuple[TrainState, dict]:
        """One update of one run; hp: {dotted field: scalar} (hyper.values)."""
        optim_hp, param_hp = hyper.section(hp, "optim"), hyper.section(hp, "param")
        optim_cfg = self.cfg.optim
        lr_mults = parametrization.lr_multipliers(self.specs, self.cfg.param, optim_cfg, param_hp)
        tx = build_optimizer(optim_cfg, self.specs, lr_mults, self.schedule, optim_hp)
        params = state.params
        loss, grads = jax.value_and_grad(lambda p: self.loss(self.for_compute(p), tokens_BxT1))(params)
        grad_norm = optax.tree.norm(grads)
        clip = self.cfg.run.grad_clip
        if clip > 0:  # a static choice: run.grad_clip is part of the program
            grads = jax.tree_util.tree_map(lambda g: g * jnp.minimum(1.0, clip / (grad_norm + 1e-12)), grads)
        updates, opt_state = tx.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        lr = optim_hp["lr"] * self.schedule(step)
        leaf_lrs = leaf_learning_rates(optim_cfg, self.specs, lr_mults, self.schedule(step), optim_hp)
        shapes = jax.eval_shape(lambda: norm_metrics(self.specs, params, updates, leaf_lrs))
        norms = jax.lax.cond(with_norms, lambda: norm_metrics(self.specs, params, updates, leaf_lrs),
                             lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
        return TrainState(params, opt_state), {"loss": loss, "grad_norm": grad_norm, "lr": lr, **norms}

    def evaluate_fn(self, params, val):
        """Mean loss over a validation set (scaling.record.validation_batches): every chunk's mean weighted
        by its number of sequences, so the result is the mean over all sequences whatever the chunking."""
        chunks_CxNxT1, rest_RxT1 = val
        params = self.for_compute(params)
        C, N, R = chunks_CxNxT1.shape[0], chunks_CxNxT1.shape[1], rest_RxT1.shape[0]
        total = jnp.float32(0.0)
        if C:
            total = jnp.sum(jax.lax.map(lambda b: self.loss(params, b), chunks_CxNxT1)) * N
        if R:  # a ragged last chunk: its own shape, weighted by its size
            total = total + self.loss(params, rest_RxT1) * R
        return total / (C * N + R)

    def norms_fn(self, params):
        return norm_metrics(self.specs, params)

    def compiled(self, members: int = 1, per_member_data: bool = False) -> Compiled:
        """The functions for `members` runs trained together (one compilation per kind and shape)."""
        key = (members > 1, per_member_data and members > 1)
        if key not in self._compiled:
            if self.layout is not None:
                if key[0]:
                    raise ValueError(f"run.mesh={dataclasses.asdict(self.layout.shape)}: runs on a mesh train one "
                                     f"at a time, not {members} batched together")
                self._compiled[key] = self._sharded()
            elif not key[0]:
                self._compiled[key] = Compiled(jax.jit(self.step_fn, donate_argnums=0), jax.jit(self.evaluate_fn),
                                               jax.jit(self.norms_fn))
            else:
                data_axis = 0 if key[1] else None
                self._compiled[key] = Compiled(
                    jax.jit(jax.vmap(self.step_fn, in_axes=(0, data_axis, None, None, 0)), donate_argnums=0),
                    jax.jit(jax.vmap(self.evaluate_fn, in_axes=(0, None))),
                    jax.jit(jax.vmap(self.norms_fn)))
        return self._compiled[key]

    def _sharded(self) -> Compiled:
        layout = self.layout
        state_sh, rep = self._state_layout, layout.replicated
        tokens_sh = layout.batch_sharding((self.cfg.run.batch_size, self.cfg.model.context + 1))

        def val_sh(val):
            return tuple(layout.batch_sharding(np.shape(a), axis=a.ndim - 2) for a in val)

        step = jax.jit(self.step_fn, in_shardings=(state_sh, tokens_sh, rep, rep, rep),
                       out_shardings=(state_sh, rep), donate_argnums=0)
        evaluate = jax.jit(self.evaluate_fn, out_shardings=rep)
        norms = jax.jit(self.norms_fn, in_shardings=(state_sh.params,), out_shardings=rep)

        def under_mesh(fn, jitted):
            def call(*args):
                with layout.activate():
                    return fn(*args)
            call.jitted = jitted  # for lowering (benchmarks/comm_volume.py)
            return call

        # Host inputs become global arrays (Layout.put), as a job of several processes needs: every
        # process holds the whole batch, the validation set and the scalars, and places its own slices.
        def step_sharded(state, tokens_BxT1, s, with_norms, hp):
            return step(state, layout.put(tokens_BxT1, tokens_sh), np.int32(s), np.bool_(with_norms),
                        {k: np.asarray(v) for k, v in hp.items()})

        def evaluate_sharded(params, val):
            return evaluate(params, tuple(layout.put(a, sh) for a, sh in zip(val, val_sh(val))))

        return Compiled(under_mesh(step_sharded, step), under_mesh(evaluate_sharded, evaluate),
                        under_mesh(norms, norms))

    def _abstract_state(self):
        params = jax.eval_shape(lambda: models.init(self.cfg.model, jax.random.PRNGKey(0), self.cfg.param,
                                                    self.cfg.optim)[0])
        return params, jax.eval_shape(self._init_tx.init, params)

    # one run (K = 1), for tests and benchmarks
    def step(self, state: TrainState, tokens_BxT1, step, with_norms, hp: dict) -> tuple[TrainState, dict]:
        return self.compiled().step(state, tokens_BxT1, step, with_norms, hp)

    def evaluate(self, params, val):
        return self.compiled().evaluate(params, val)


@functools.lru_cache(maxsize=2)
def _cached(program: Config) -> Program:
    return Program(program)


def get_program(cfg: Config) -> Program:
    """Compiled programs are reused across runs with the same program config (scaling.hyper): a rerun, a
    resumed run, or another point of a learning-rate sweep. The cache is bounded, so a worker that trains
    many runs keeps its memory flat."""
    return _cached(hyper.program_config(cfg))

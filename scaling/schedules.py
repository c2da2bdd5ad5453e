"""Learning-rate schedules as multipliers in [0, 1] of the peak lr; they multiply per-role lrs.

SCHEDULES is the one list of schedule names (run.schedule is validated against it): name -> whether the
schedule reads the run's length (run.steps), which then shapes the compiled program (scaling.hyper).
A schedule has no runtime hyperparameters: warmup_steps and decay_frac shape the program too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import jax.numpy as jnp

if TYPE_CHECKING:  # scaling.config validates run.schedule against SCHEDULES
    from scaling.config import RunConfig

SCHEDULES = {"constant": False, "warmup": False, "wsd": True, "cosine": True}

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def make_schedule(run: RunConfig) -> Schedule:
    total, warm = run.steps, run.warmup_steps

    def warmup(step):
        return jnp.minimum(1.0, (step + 1) / warm) if warm > 0 else jnp.ones_like(step, jnp.float32)

    if run.schedule in ("constant", "warmup"):
        # "constant" with warmup_steps > 0 is the same as "warmup": linear warmup then flat.
        return lambda step: warmup(jnp.asarray(step, jnp.float32))
    if run.schedule == "wsd":
        decay_steps = int(round(run.decay_frac * total))
        decay_start = total - decay_steps

        def wsd(step):
            step = jnp.asarray(step, jnp.float32)
            frac = jnp.clip((step + 1 - decay_start) / max(decay_steps, 1), 0.0, 1.0)  # 0 at the last step
            return warmup(step) * (1.0 - frac)

        return wsd
    if run.schedule == "cosine":

        def cosine(step):
            step = jnp.asarray(step, jnp.float32)
            prog = jnp.clip((step - warm) / max(total - warm, 1), 0.0, 1.0)
            return warmup(step) * 0.5 * (1.0 + jnp.cos(jnp.pi * prog))

        return cosine
    raise ValueError(f"run.schedule={run.schedule!r}")

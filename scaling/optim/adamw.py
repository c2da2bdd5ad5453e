"""AdamW with per-leaf lr multipliers from the parametrization (Loshchilov & Hutter, arXiv 1711.05101).

theta <- theta - lr_t * (mult_leaf * m_hat / (sqrt(v_hat) + eps) + wd * theta)   (decayed roles only)
With every multiplier 1 this is exactly optax.adamw(lr_t, b1, b2, eps, wd, mask).
"""

from __future__ import annotations

import optax

from scaling.optim.common import apply_lr, hyper_values, scale_and_decay

# the scalars fed to the compiled step as inputs (scaling/optim/common.py); the rest of the section is static
HYPERPARAMETERS = ("lr", "b1", "b2", "eps", "weight_decay")
SGD_HYPERPARAMETERS = ("lr", "b1", "weight_decay")


def build(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    return optax.chain(
        optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
        *scale_and_decay(cfg, hp, specs, lr_mults),
        apply_lr(hp["lr"], schedule),
    )


def build_sgd(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    """SGD with heavy-ball momentum b1 (0 = plain SGD: the trace is g + 0 * t, exactly g); the muP SGD
    column applies to it."""
    hp = hyper_values(cfg, SGD_HYPERPARAMETERS, hp)
    return optax.chain(
        optax.trace(decay=hp["b1"]),
        *scale_and_decay(cfg, hp, specs, lr_mults),
        apply_lr(hp["lr"], schedule),
    )

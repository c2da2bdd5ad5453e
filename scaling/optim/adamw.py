"""AdamW with per-leaf lr multipliers from the parametrization (Loshchilov & Hutter, arXiv 1711.05101).

theta <- theta - lr_t * (mult_leaf * m_hat / (sqrt(v_hat) + eps) + wd * theta)   (decayed roles only)
With every multiplier 1 this is exactly optax.adamw(lr_t, b1, b2, eps, wd, mask).
"""

from __future__ import annotations

import optax

from scaling.optim.common import apply_lr, is_zero, scale_and_decay


def build(cfg, specs, lr_mults, schedule) -> optax.GradientTransformation:
    return optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        *scale_and_decay(cfg, specs, lr_mults),
        apply_lr(cfg.lr, schedule),
    )


def build_sgd(cfg, specs, lr_mults, schedule) -> optax.GradientTransformation:
    """SGD with heavy-ball momentum b1 (0 = plain SGD); the muP SGD column applies to it."""
    return optax.chain(
        optax.identity() if is_zero(cfg.b1) else optax.trace(decay=cfg.b1),
        *scale_and_decay(cfg, specs, lr_mults),
        apply_lr(cfg.lr, schedule),
    )

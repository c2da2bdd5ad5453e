"""AdamW with per-leaf lr multipliers from the parametrization (Loshchilov & Hutter, arXiv 1711.05101).

theta <- theta - lr_t * (mult_leaf * m_hat / (sqrt(v_hat) + eps) + wd * theta)   (decayed roles only)
With every multiplier 1 this is exactly optax.adamw(lr_t, b1, b2, eps, wd, mask).
"""

from __future__ import annotations

import dataclasses

import optax

from scaling.config_io import require
from scaling.optim.common import apply_lr, hyper_values, scale_and_decay
from scaling.optim.section import OptimConfig

# the scalars fed to the compiled step as inputs (scaling/optim/common.py); the rest of the section is static
HYPERPARAMETERS = ("lr", "b1", "b2", "eps", "weight_decay")
SGD_HYPERPARAMETERS = ("lr", "b1", "weight_decay")


def _check_beta(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        require(0 <= v < 1, f"optim.{name}={v} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class AdamMoments:
    """Adam's moment decays and epsilon (AdamW itself, and the AdamW other optimizers fall back to)."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8

    def check(self) -> None:
        _check_beta(self, "b1", "b2")
        require(self.eps >= 0, f"optim.eps={self.eps} must be >= 0")


@dataclasses.dataclass(frozen=True)
class AdamWFallback(AdamMoments):
    """The AdamW an optimizer hands some roles to (scaling.optim.REGISTRY's fallback_roles), at its own lr."""

    fallback_lr: float = 0.0  # 0 -> optim.lr

    def check(self) -> None:
        require(self.fallback_lr >= 0, f"optim.fallback_lr={self.fallback_lr} must be >= 0")


@dataclasses.dataclass(frozen=True)
class AdamWConfig(AdamMoments, OptimConfig):
    name: str = "adamw"


@dataclasses.dataclass(frozen=True)
class SGDConfig(OptimConfig):
    name: str = "sgd"
    b1: float = 0.9  # heavy-ball momentum (0: plain SGD)

    def check(self) -> None:
        _check_beta(self, "b1")


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

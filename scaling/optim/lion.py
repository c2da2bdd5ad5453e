"""Lion and Tiger: sign updates.

Lion (Chen et al., arXiv 2302.06675; optax.scale_by_lion):
  c = b1 m + (1 - b1) g;  direction = sign(c);  m <- b2 m + (1 - b2) g      (m0 = 0, sign(0) = 0)
Tiger (Su, bojone/tiger `tiger.py`) is Lion with one beta: m <- beta m + (1 - beta) g; direction = sign(m).
  Config mapping: optim.name="tiger" uses optim.b1 as beta for both of Lion's betas (optim.b2 is only
  used by the embedding's AdamW fallback). Tiger's reference defaults: b1=0.965, weight_decay=0.01.

Sign updates move a row of a rare token by lr every step even when its gradient is zero, and with decay
send it to -+1/weight_decay (Su, kexue.fm/archives/9736). optim.embedding_fallback picks the remedy for
the embedding role:
  adamw  (default) AdamW(b1, b2, eps) on the embedding at optim.fallback_lr (0 -> lr)
  lazy   sign updates, but a row (a token: W[..., v, :]) whose gradient is exactly zero gets no update at
         all, decay included; its momentum keeps decaying as an EMA of zero gradients would
  none   sign updates everywhere (the anomaly is left in, e.g. to measure it)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import optax

from scaling.config_io import require
from scaling.optim.adamw import AdamWFallback
from scaling.optim.common import apply_lr, base_lrs, hyper_values, route, scale_and_decay
from scaling.optim.section import OptimConfig
from scaling.specs import ROLES, tree_map_specs

EMBEDDING_FALLBACKS = ("adamw", "lazy", "none")


@dataclasses.dataclass(frozen=True)
class LionConfig(AdamWFallback, OptimConfig):
    """b1, b2: Lion's betas (Tiger: b1 is its one beta); b2, eps, fallback_lr also feed the embedding's AdamW."""

    name: str = "lion"
    embedding_fallback: str = "adamw"  # adamw | lazy | none

    def adamw_only_fields(self) -> tuple[str, ...]:
        """The fields only the embedding's AdamW reads (Tiger's b2 among them)."""
        return ("eps", "fallback_lr") + (("b2",) if self.name == "tiger" else ())

    def check(self) -> None:
        require(self.embedding_fallback in EMBEDDING_FALLBACKS, f"optim.embedding_fallback={self.embedding_fallback!r} "
                f"must be one of {', '.join(EMBEDDING_FALLBACKS)}")
        if self.embedding_fallback != "adamw":
            default = type(self)()
            for name in self.adamw_only_fields():
                value = getattr(self, name)
                require(value == getattr(default, name), f"optim.{name}={value!r} has no effect with "
                        f"optim.embedding_fallback={self.embedding_fallback!r} (only the embedding's AdamW reads "
                        "it); leave it at its default")


@dataclasses.dataclass(frozen=True)
class TigerConfig(LionConfig):
    name: str = "tiger"


def only_rows_with_gradient(inner: optax.GradientTransformation, specs: Any, roles=("embedding",)
                            ) -> optax.GradientTransformation:
    """Zero the final update of every row (last axis = one token's vector) whose gradient is all zero."""

    def update_fn(grads, state, params=None):
        updates, state = inner.update(grads, state, params)

        def keep_active_rows(spec, u, g):
            if spec.role not in roles:
                return u
            row_has_grad = jnp.any(g != 0, axis=-1, keepdims=True)
            return jnp.where(row_has_grad, u, jnp.zeros_like(u))

        return tree_map_specs(keep_active_rows, specs, updates, grads), state

    return optax.GradientTransformation(inner.init, update_fn)


# the scalars fed to the compiled step as inputs (scaling/optim/common.py); b2, eps and fallback_lr feed
# the embedding's AdamW (and Lion's second beta)
HYPERPARAMETERS = ("lr", "b1", "b2", "eps", "weight_decay", "fallback_lr")


def fallback_roles(cfg) -> tuple[str, ...]:
    """The roles handed to AdamW: the embedding with optim.embedding_fallback=adamw."""
    return ("embedding",) if cfg.embedding_fallback == "adamw" else ()


def build_sign_optimizer(cfg, hp, specs, lr_mults, schedule, b1, b2) -> optax.GradientTransformation:
    sign = optax.scale_by_lion(b1=b1, b2=b2)
    if cfg.embedding_fallback == "adamw":
        direction = route(specs, {r: "adamw" if r == "embedding" else "sign" for r in ROLES}, {
            "sign": sign, "adamw": optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])})
        lrs = base_lrs(specs, hp, fallback_roles(cfg))
    else:
        direction, lrs = sign, hp["lr"]
    chain = optax.chain(
        direction,
        *scale_and_decay(cfg, hp, specs, lr_mults),
        apply_lr(lrs, schedule),
    )
    return only_rows_with_gradient(chain, specs) if cfg.embedding_fallback == "lazy" else chain


def build_lion(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    return build_sign_optimizer(cfg, hp, specs, lr_mults, schedule, b1=hp["b1"], b2=hp["b2"])


def build_tiger(cfg, specs, lr_mults, schedule, hp=None) -> optax.GradientTransformation:
    hp = hyper_values(cfg, HYPERPARAMETERS, hp)
    return build_sign_optimizer(cfg, hp, specs, lr_mults, schedule, b1=hp["b1"], b2=hp["b1"])

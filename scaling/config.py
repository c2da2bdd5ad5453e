"""Frozen dataclass configs for one training run, loaded from JSON/YAML with dotted overrides.

A `Config` has five sections: model, param (parametrization), optim, data, run. Every field is
validated on construction; errors are `ConfigError`s that name the dotted field
(e.g. "model.n_heads=3 must divide model.width=128"). Dicts, files and dotted overrides are
(de)serialised by scaling.config_io.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from scaling.config_io import ConfigError, apply_overrides, from_dict, load_file, to_dict
from scaling.schedules import SCHEDULES
from scaling.specs import ROLES

__all__ = ["ConfigError", "Config", "ModelConfig", "ParamConfig", "OptimConfig", "DataConfig", "RunConfig",
           "PerRole", "PerRoleNorm", "OPTIMIZERS", "OPTIMIZER_FIELDS", "from_dict", "to_dict", "apply_overrides",
           "load_file", "load_config"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class PerRole:
    """One value per parameter role (embedding, hidden, output, vector)."""

    embedding: float = 1.0
    hidden: float = 1.0
    output: float = 1.0
    vector: float = 1.0

    def get(self, role: str) -> float:
        return getattr(self, role)


@dataclasses.dataclass(frozen=True)
class PerRoleNorm:
    """Scion's norm per role (see scaling.optim.lmo; Pethick et al., arXiv 2502.07529)."""

    embedding: str = "colnorm"
    hidden: str = "spectral"
    output: str = "sign"
    vector: str = "bias_rms"

    def get(self, role: str) -> str:
        return getattr(self, role)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: str = "transformer"  # transformer | mlp
    vocab_size: int = 256
    width: int = 128  # d_model (transformer) / embedding and hidden width (mlp)
    depth: int = 4  # transformer blocks / mlp hidden layers
    n_heads: int = 4
    head_dim: int = 0  # 0 -> width // n_heads
    mlp_ratio: float = 4.0  # hidden size of the MLP block = round(mlp_ratio * width)
    mlp: str = "swiglu"  # swiglu | gelu
    context: int = 128  # sequence length seen by the model
    window: int = 8  # mlp kind: how many previous tokens the MLP LM sees
    norm_gain: bool = True  # RMSNorm with a learned gain (a "vector" parameter)
    norm_everywhere: bool = False  # parameter-free RMSNorm before every linear, QK-norm included
    norm_eps: float = 1e-6
    attn_scale: str = "sqrt"  # sqrt: 1/sqrt(d_head); inverse: 1/d_head
    rope_theta: float = 10_000.0
    tie_embeddings: bool = False
    residual_out_init: bool = False  # scale residual-output projections' init by 1/sqrt(2L)
    scan_layers: bool = False  # lax.scan over blocks (fast compiles for deep models; slower on CPU)

    def __post_init__(self):
        _check(self.kind in ("transformer", "mlp"), f"model.kind={self.kind!r} must be 'transformer' or 'mlp'")
        for name in ("vocab_size", "width", "depth", "n_heads", "context", "window"):
            v = getattr(self, name)
            _check(v > 0, f"model.{name}={v} must be positive")
        _check(self.head_dim >= 0, f"model.head_dim={self.head_dim} must be >= 0 (0 means width // n_heads)")
        _check(self.mlp_ratio > 0, f"model.mlp_ratio={self.mlp_ratio} must be positive")
        _check(self.mlp in ("swiglu", "gelu"), f"model.mlp={self.mlp!r} must be 'swiglu' or 'gelu'")
        _check(self.attn_scale in ("sqrt", "inverse"), f"model.attn_scale={self.attn_scale!r} must be 'sqrt' or 'inverse'")
        _check(self.norm_eps > 0, f"model.norm_eps={self.norm_eps} must be positive")
        if self.kind == "transformer" and self.head_dim == 0:
            _check(self.width % self.n_heads == 0,
                   f"model.n_heads={self.n_heads} must divide model.width={self.width} (or set model.head_dim)")
        if self.kind == "transformer":
            _check(self.d_head % 2 == 0, f"model head dimension {self.d_head} must be even for RoPE")

    @property
    def d_head(self) -> int:
        return self.head_dim or self.width // self.n_heads

    @property
    def d_ff(self) -> int:
        return max(1, round(self.mlp_ratio * self.width))


@dataclasses.dataclass(frozen=True)
class ParamConfig:
    """Parametrization: init scales, forward multipliers and per-role lr multipliers from specs."""

    kind: str = "sp"  # sp | mup | spectral | scion (Scion's boundary init from optim.norms/radius)
    base_width: int = 0  # muP base width (0 -> the model's own width: muP == SP exactly)
    init_std: float = 0.02  # SP/muP std of hidden and output matrices at the base width (0 -> 1/sqrt(fan_in))
    embed_std: float = 1.0  # std of embedding entries (token vectors of RMS ~embed_std)
    output_zero_init: bool = False
    lr_mult: PerRole = PerRole()  # free per-role learning-rate multipliers, applied on top of the rule

    def __post_init__(self):
        _check(self.kind in ("sp", "mup", "spectral", "scion"),
               f"param.kind={self.kind!r} must be one of sp, mup, spectral, scion")
        _check(self.base_width >= 0, f"param.base_width={self.base_width} must be >= 0")
        _check(self.init_std >= 0, f"param.init_std={self.init_std} must be >= 0")
        _check(self.embed_std > 0, f"param.embed_std={self.embed_std} must be positive")
        for r in ROLES:
            v = self.lr_mult.get(r)
            _check(v >= 0, f"param.lr_mult.{r}={v} must be >= 0")


# The OptimConfig fields each optimizer reads (besides name); a field it does not read must stay at its
# default, so no option is silently ignored (tests/test_optim_config.py checks this table against the
# builders: every listed field changes the update).
_DECAY = ("lr", "weight_decay", "decay_roles", "wd_coupling")
_ADAMW_FALLBACK = ("b1", "b2", "eps", "fallback_lr")
_NEWTON_SCHULZ = ("ns_steps", "ns_coeffs", "ns_dtype", "ns_method")
OPTIMIZER_FIELDS = {
    "adamw": (*_DECAY, "b1", "b2", "eps"),
    "sgd": (*_DECAY, "b1"),
    "lion": (*_DECAY, *_ADAMW_FALLBACK, "embedding_fallback"),
    "tiger": (*_DECAY, *_ADAMW_FALLBACK, "embedding_fallback"),  # b2, eps: the embedding's AdamW only
    "muon": (*_DECAY, *_ADAMW_FALLBACK, "momentum", "nesterov", *_NEWTON_SCHULZ, "shape_scale"),
    "scion": (*_DECAY, "constrained", "alpha", "norms", "radius", *_NEWTON_SCHULZ),
    "manifold_muon": (*_DECAY, *_ADAMW_FALLBACK, "momentum", "nesterov", "dual_steps"),
}
OPTIMIZERS = tuple(OPTIMIZER_FIELDS)  # the optimizer names (scaling.optim.REGISTRY has one row each)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0  # lr-coupled (optax semantics); to which lr: wd_coupling
    decay_roles: tuple[str, ...] = ("embedding", "hidden", "output")  # vectors are not decayed by default
    wd_coupling: str = "base"  # base: shrink lr*schedule*wd (muP's width invariance); leaf: lr_leaf*wd
    # Muon / Scion / manifold Muon
    momentum: float = 0.95  # Muon's beta
    nesterov: bool = True
    ns_steps: int = 5
    ns_coeffs: str = "muon"  # muon | polar_express
    ns_dtype: str = "float32"  # float32 | bfloat16: the Newton-Schulz iteration's dtype (Keller uses bf16)
    ns_method: str = "auto"  # direct | gram (Gram form with restarts: 1.5x faster on (d, 4d) kernels) | auto
    shape_scale: str = "keller"  # keller | moonlight | spectral
    fallback_lr: float = 0.0  # lr of the AdamW fallback for non-hidden roles (0 -> lr)
    # Scion
    constrained: bool = False
    alpha: float = 0.1  # Scion momentum as gradient averaging: d <- (1-alpha) d + alpha g; 1 = off
    norms: PerRoleNorm = PerRoleNorm()
    radius: PerRole = PerRole()
    # Lion / Tiger (tiger uses b1 as its single beta): the embedding role uses AdamW by default
    # (sign-update row drift; notes section 2)
    embedding_fallback: str = "adamw"  # adamw | lazy | none
    # manifold Muon: iterations of dual ascent for the tangent direction (early stop at tolerance 1e-6)
    dual_steps: int = 100

    def __post_init__(self):
        _check(self.name in OPTIMIZERS, f"optim.name={self.name!r} is not one of {', '.join(OPTIMIZERS)}")
        _check(self.lr >= 0, f"optim.lr={self.lr} must be >= 0")
        for name in ("b1", "b2", "momentum"):
            v = getattr(self, name)
            _check(0 <= v < 1, f"optim.{name}={v} must be in [0, 1)")
        _check(0 < self.alpha <= 1, f"optim.alpha={self.alpha} must be in (0, 1] (Scion: 1 means no momentum)")
        _check(self.eps >= 0, f"optim.eps={self.eps} must be >= 0")
        _check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        for r in self.decay_roles:
            _check(r in ROLES, f"optim.decay_roles contains unknown role {r!r} (roles: {', '.join(ROLES)})")
        _check(self.ns_steps > 0, f"optim.ns_steps={self.ns_steps} must be positive")
        _check(self.ns_coeffs in ("muon", "polar_express"), f"optim.ns_coeffs={self.ns_coeffs!r} must be 'muon' or 'polar_express'")
        _check(self.shape_scale in ("keller", "moonlight", "spectral"),
               f"optim.shape_scale={self.shape_scale!r} must be one of keller, moonlight, spectral")
        _check(self.fallback_lr >= 0, f"optim.fallback_lr={self.fallback_lr} must be >= 0")
        _check(self.embedding_fallback in ("adamw", "lazy", "none"),
               f"optim.embedding_fallback={self.embedding_fallback!r} must be one of adamw, lazy, none")
        _check(self.ns_dtype in ("float32", "bfloat16"), f"optim.ns_dtype={self.ns_dtype!r} must be float32 or bfloat16")
        _check(self.ns_method in ("direct", "gram", "auto"),
               f"optim.ns_method={self.ns_method!r} must be one of direct, gram, auto")
        _check(self.dual_steps > 0, f"optim.dual_steps={self.dual_steps} must be positive")
        _check(self.wd_coupling in ("base", "leaf"), f"optim.wd_coupling={self.wd_coupling!r} must be 'base' or 'leaf'")
        norms = ("spectral", "colnorm", "rownorm", "sign", "bias_rms")
        for r in ROLES:
            _check(self.norms.get(r) in norms, f"optim.norms.{r}={self.norms.get(r)!r} is not one of {', '.join(norms)}")
            _check(self.radius.get(r) > 0, f"optim.radius.{r}={self.radius.get(r)} must be positive")
        vector_norms, matrix_norms = ("bias_rms", "sign"), ("spectral", "colnorm", "rownorm", "sign")
        _check(self.norms.vector in vector_norms,
               f"optim.norms.vector={self.norms.vector!r} must be one of {', '.join(vector_norms)} (vectors have no matrix norm)")
        for r in ("embedding", "hidden", "output"):
            _check(self.norms.get(r) in matrix_norms,
                   f"optim.norms.{r}={self.norms.get(r)!r} must be a matrix norm: one of {', '.join(matrix_norms)}")
        _check(not (self.name == "scion" and self.constrained and self.weight_decay > 0),
               f"optim.weight_decay={self.weight_decay} must be 0 with optim.constrained=true "
               "(constrained Scion already decays: W <- (1 - lr) W - lr * radius * lmo)")

    def unread_fields(self, param_kind: str = "sp") -> tuple[str, ...]:
        """The fields this optimizer (and a param.kind='scion' boundary init) never reads."""
        read = set(OPTIMIZER_FIELDS[self.name]) | {"name"}
        if self.name in ("lion", "tiger") and self.embedding_fallback != "adamw":
            read -= {"eps", "fallback_lr"} | ({"b2"} if self.name == "tiger" else set())
        if param_kind == "scion":
            read |= {"norms", "radius"}
        return tuple(f.name for f in dataclasses.fields(self) if f.name not in read)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Validated without touching the filesystem: whether data.path exists, parses and fits the model is
    checked by scaling.data.load_dataset when a run starts (same ConfigError, naming the field)."""

    source: str = "shakespeare"  # shakespeare | file | synthetic
    # file source: a file or a glob of shards (concatenated in sorted order): .bin token files (llm.c
    # header, or headerless data.dtype), any other file read as bytes
    path: str = ""
    dtype: str = "uint16"  # headerless .bin element type (a llm.c header names its own)
    val_fraction: float = 0.1  # file source without val_path: the last fraction of tokens is validation
    val_path: str = ""  # file source: validation file or glob (then val_fraction is not used)

    def __post_init__(self):
        _check(self.source in ("shakespeare", "file", "synthetic"),
               f"data.source={self.source!r} must be one of shakespeare, file, synthetic")
        _check(self.dtype in ("uint16", "uint32"), f"data.dtype={self.dtype!r} must be uint16 or uint32")
        _check(0 < self.val_fraction < 1, f"data.val_fraction={self.val_fraction} must be in (0, 1)")
        if self.source == "file":
            _check(bool(self.path), "data.path must be set when data.source='file'")
        _check(not self.val_path or self.source == "file",
               f"data.val_path={self.val_path!r} applies only to data.source='file'")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    steps: int = 200
    batch_size: int = 32
    seed: int = 0  # parameter init
    data_seed: int = 0  # batches are a pure function of (data_seed, step)
    schedule: str = "constant"  # constant | warmup | wsd | cosine
    warmup_steps: int = 0
    decay_frac: float = 0.2  # wsd: the last fraction of steps decays linearly to 0
    grad_clip: float = 0.0  # global-norm clip (0 = off)
    compute_dtype: str = "float32"  # float32 | bfloat16 (parameters stay float32)
    log_every: int = 10
    norms_every: int = 0  # operator-norm logging interval (0 -> log_every)
    eval_per_octave: int = 2  # validation at round(2^(j/k)) steps (and the last step)
    # Validation is one fixed set per (data, model.context): ceil(eval_tokens / context) windows drawn
    # with eval_seed, whatever run.batch_size and run.data_seed are, so runs are compared on the same
    # sequences. The default is today's default run (4 batches x 32 x 128); raise it for long runs.
    eval_tokens: int = 16_384
    eval_seed: int = 0
    eval_batch_size: int = 0  # sequences per evaluation forward pass (0: as many as fit 16,384 tokens)
    checkpoint_every: int = 100  # steps (0 = only at the end)
    diverge_factor: float = 2.0  # loss > factor * initial loss -> diverged

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "eval_per_octave", "eval_tokens"):
            v = getattr(self, name)
            _check(v > 0, f"run.{name}={v} must be positive")
        for name in ("warmup_steps", "checkpoint_every", "norms_every", "eval_seed", "eval_batch_size"):
            v = getattr(self, name)
            _check(v >= 0, f"run.{name}={v} must be >= 0")
        _check(self.schedule in SCHEDULES, f"run.schedule={self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        _check(0 <= self.decay_frac <= 1, f"run.decay_frac={self.decay_frac} must be in [0, 1]")
        _check(self.grad_clip >= 0, f"run.grad_clip={self.grad_clip} must be >= 0")
        _check(self.compute_dtype in ("float32", "bfloat16"), f"run.compute_dtype={self.compute_dtype!r} must be float32 or bfloat16")
        _check(self.diverge_factor > 1, f"run.diverge_factor={self.diverge_factor} must be > 1")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    param: ParamConfig = ParamConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig()

    def __post_init__(self):
        m, o = self.model, self.optim
        defaults = OptimConfig()
        for name in o.unread_fields(self.param.kind):
            for key, value, default in _leaves(f"optim.{name}", getattr(o, name), getattr(defaults, name)):
                _check(value == default, f"{key}={value!r} has no effect with optim.name={o.name!r} "
                       f"(it reads {', '.join(OPTIMIZER_FIELDS[o.name])}); leave it at its default")
        if m.tie_embeddings and (o.name == "scion" or self.param.kind == "scion"):
            _check(o.norms.embedding == "sign",
                   f"optim.norms.embedding={o.norms.embedding!r} with model.tie_embeddings=true: a tied embedding "
                   "is also the readout and takes 'sign' (scaled by 1/width, so the readout's unit step has "
                   "RMS->inf norm 1 at every width); set optim.norms.embedding=sign")
        if m.residual_out_init:
            _check(m.kind == "transformer", "model.residual_out_init applies to model.kind='transformer' "
                   "(the MLP language model has no residual stream)")
            _check(o.name != "manifold_muon", "model.residual_out_init has no effect with optim.name="
                   "'manifold_muon' (hidden matrices start on the Stiefel manifold, all singular values 1)")
        if self.param.base_width:
            _check(self.param.kind in ("mup", "spectral") or self.param.base_width == m.width,
                   f"param.base_width={self.param.base_width} only applies to param.kind='mup' or 'spectral'")
        if m.kind == "mlp":
            _check(m.window <= m.context, f"model.window={m.window} must be <= model.context={m.context}")


def _leaves(key: str, value: Any, default: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) of a field, nested sections (e.g. optim.norms) split per subfield."""
    if dataclasses.is_dataclass(value):
        return [leaf for f in dataclasses.fields(value)
                for leaf in _leaves(f"{key}.{f.name}", getattr(value, f.name), getattr(default, f.name))]
    return [(key, value, default)]


def load_config(path: str | Path | None = None, overrides: list[str] | dict = ()) -> Config:
    data = load_file(path) if path else {}
    return from_dict(Config, apply_overrides(data, overrides or []))

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

from scaling.config_io import ConfigError, apply_overrides, from_dict, load_file, require, to_dict
from scaling.models import MODELS
from scaling.optim import REGISTRY, OptimConfig, optim_config
from scaling.optim.adamw import AdamWConfig
from scaling.optim.lmo import PerRoleNorm
from scaling.parametrization import KINDS as PARAM_KINDS
from scaling.schedules import SCHEDULES
from scaling.sharding import MeshShape, ShardingRules
from scaling.specs import ROLES, PerRole

# Each list of names lives next to what it names and is validated here from there: model kinds
# (scaling.models.MODELS), parametrizations (scaling.parametrization.KINDS), optimizers and their config
# classes (scaling.optim.REGISTRY; the optim section is a tagged union, scaling.optim.section), Scion's
# norms (scaling.optim.lmo), schedules (scaling.schedules.SCHEDULES), roles (scaling.specs.ROLES).
OPTIMIZERS = tuple(REGISTRY)

__all__ = ["ConfigError", "Config", "ModelConfig", "ParamConfig", "OptimConfig", "DataConfig", "RunConfig",
           "PerRole", "PerRoleNorm", "OPTIMIZERS", "optim_config", "from_dict", "to_dict", "apply_overrides",
           "load_file", "load_config"]



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
    remat: bool = False  # transformer: jax.checkpoint around each block (recompute activations in backward)

    def __post_init__(self):
        require(self.kind in MODELS, f"model.kind={self.kind!r} must be one of {', '.join(MODELS)}")
        for name in ("vocab_size", "width", "depth", "n_heads", "context", "window"):
            v = getattr(self, name)
            require(v > 0, f"model.{name}={v} must be positive")
        require(self.head_dim >= 0, f"model.head_dim={self.head_dim} must be >= 0 (0 means width // n_heads)")
        require(self.mlp_ratio > 0, f"model.mlp_ratio={self.mlp_ratio} must be positive")
        require(self.mlp in ("swiglu", "gelu"), f"model.mlp={self.mlp!r} must be 'swiglu' or 'gelu'")
        require(self.attn_scale in ("sqrt", "inverse"), f"model.attn_scale={self.attn_scale!r} must be 'sqrt' or 'inverse'")
        require(self.norm_eps > 0, f"model.norm_eps={self.norm_eps} must be positive")
        if self.kind == "transformer" and self.head_dim == 0:
            require(self.width % self.n_heads == 0,
                   f"model.n_heads={self.n_heads} must divide model.width={self.width} (or set model.head_dim)")
        if self.kind == "transformer":
            require(self.d_head % 2 == 0, f"model head dimension {self.d_head} must be even for RoPE")
        require(not self.remat or self.kind == "transformer",
                "model.remat applies to model.kind='transformer' (the MLP language model has no blocks to checkpoint)")

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
        require(self.kind in PARAM_KINDS, f"param.kind={self.kind!r} must be one of {', '.join(PARAM_KINDS)}")
        require(self.base_width >= 0, f"param.base_width={self.base_width} must be >= 0")
        require(self.init_std >= 0, f"param.init_std={self.init_std} must be >= 0")
        require(self.embed_std > 0, f"param.embed_std={self.embed_std} must be positive")
        for r in ROLES:
            v = self.lr_mult.get(r)
            require(v >= 0, f"param.lr_mult.{r}={v} must be >= 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Validated without touching the filesystem: whether data.path exists, parses and fits the model is
    checked by scaling.data.load_dataset when a run starts (same ConfigError, naming the field)."""

    source: str = "shakespeare"  # shakespeare | file | synthetic
    # file source: a file or a glob of shards (concatenated in sorted order): .bin token files (llm.c
    # header, or headerless data.dtype), any other file read as bytes; or a directory of
    # `scaling data prepare` (its meta.json lists the train and val shards)
    path: str = ""
    dtype: str = "uint16"  # headerless .bin element type (a llm.c header names its own)
    val_fraction: float = 0.1  # file source without val_path: the last fraction of tokens is validation
    val_path: str = ""  # file source: validation file or glob (then val_fraction is not used)

    def __post_init__(self):
        require(self.source in ("shakespeare", "file", "synthetic"),
               f"data.source={self.source!r} must be one of shakespeare, file, synthetic")
        require(self.dtype in ("uint16", "uint32"), f"data.dtype={self.dtype!r} must be uint16 or uint32")
        require(0 < self.val_fraction < 1, f"data.val_fraction={self.val_fraction} must be in (0, 1)")
        if self.source == "file":
            require(bool(self.path), "data.path must be set when data.source='file'")
        require(not self.val_path or self.source == "file",
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
    # devices per mesh axis (scaling.sharding; default one device) and logical axis -> mesh axes rules
    mesh: MeshShape = MeshShape()
    sharding_rules: ShardingRules = ShardingRules()

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "eval_per_octave", "eval_tokens"):
            v = getattr(self, name)
            require(v > 0, f"run.{name}={v} must be positive")
        for name in ("warmup_steps", "checkpoint_every", "norms_every", "eval_seed", "eval_batch_size"):
            v = getattr(self, name)
            require(v >= 0, f"run.{name}={v} must be >= 0")
        require(self.schedule in SCHEDULES, f"run.schedule={self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        require(0 <= self.decay_frac <= 1, f"run.decay_frac={self.decay_frac} must be in [0, 1]")
        require(self.grad_clip >= 0, f"run.grad_clip={self.grad_clip} must be >= 0")
        require(self.compute_dtype in ("float32", "bfloat16"), f"run.compute_dtype={self.compute_dtype!r} must be float32 or bfloat16")
        require(self.diverge_factor > 1, f"run.diverge_factor={self.diverge_factor} must be > 1")
        self.mesh.check()
        self.sharding_rules.check()
        shards = self.mesh.axis_size(self.sharding_rules.batch)
        require(self.batch_size % shards == 0, f"run.batch_size={self.batch_size} must be divisible by the "
                f"{shards} batch shards of run.mesh (axes {', '.join(self.sharding_rules.batch)})")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    param: ParamConfig = ParamConfig()
    optim: OptimConfig = AdamWConfig()  # the class of optim.name (scaling.optim.section)
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig()

    def __post_init__(self):
        m, o = self.model, self.optim
        if o.name != "scion" and self.param.kind != "scion":  # only they read Scion's geometry
            default = type(o)()
            for name in ("norms", "radius"):
                for key, value, base in _leaves(f"optim.{name}", getattr(o, name), getattr(default, name)):
                    require(value == base, f"{key}={value!r} has no effect with optim.name={o.name!r} and "
                           f"param.kind={self.param.kind!r} (read by optim.name='scion' or param.kind='scion'); "
                           "leave it at its default")
        if m.tie_embeddings and (o.name == "scion" or self.param.kind == "scion"):
            require(o.norms.embedding == "sign",
                   f"optim.norms.embedding={o.norms.embedding!r} with model.tie_embeddings=true: a tied embedding "
                   "is also the readout and takes 'sign' (scaled by 1/width, so the readout's unit step has "
                   "RMS->inf norm 1 at every width); set optim.norms.embedding=sign")
        if m.residual_out_init:
            require(m.kind == "transformer", "model.residual_out_init applies to model.kind='transformer' "
                   "(the MLP language model has no residual stream)")
            require(o.name != "manifold_muon", "model.residual_out_init has no effect with optim.name="
                   "'manifold_muon' (hidden matrices start on the Stiefel manifold, all singular values 1)")
        if self.param.base_width:
            require(self.param.kind in ("mup", "spectral") or self.param.base_width == m.width,
                   f"param.base_width={self.param.base_width} only applies to param.kind='mup' or 'spectral'")
        if m.kind == "mlp":
            require(m.window <= m.context, f"model.window={m.window} must be <= model.context={m.context}")


def _leaves(key: str, value: Any, default: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) of a field, nested sections (e.g. optim.norms) split per subfield."""
    if dataclasses.is_dataclass(value):
        return [leaf for f in dataclasses.fields(value)
                for leaf in _leaves(f"{key}.{f.name}", getattr(value, f.name), getattr(default, f.name))]
    return [(key, value, default)]


def load_config(path: str | Path | None = None, overrides: list[str] | dict = ()) -> Config:
    data = load_file(path) if path else {}
    return from_dict(Config, apply_overrides(data, overrides or []))

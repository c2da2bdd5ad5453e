"""Run identity: which configs are the same run, versioned so that a code change does not orphan runs.

    identity(cfg) = {"schema": IDENTITY_SCHEMA,
                     "config": {dotted key: value for every field whose value differs from its default}}
    digest(cfg)   = sha256 of the canonical JSON of identity(cfg) (sorted keys, no whitespace, NaN refused)

A sweep's run id is "<coordinates>-<first 8 hex digits of digest(cfg)>" (sweeps.run_id), and
`scaling train --out DIR` resumes DIR only if `check_same_run` finds the same identity in its config.json.
Values are canonical: a config is coerced to its fields' types first, so 1e-3 and 0.001, an int given to a
float field, or a default spelled out are the same run.

The rule, enforced by tests/test_identity.py against tests/data/identity_defaults_v<IDENTITY_SCHEMA>.json
(the flattened default of every field under this schema):
- Adding a field with a default never changes an id: a config that leaves it at its default has the
  identity it had before the field existed, and a config.json written before the field existed is still
  the same run (missing fields read as their defaults).
- Changing a default, removing or renaming a field, or changing what a value means is a schema bump:
  IDENTITY_SCHEMA + 1, a new snapshot tests/data/identity_defaults_v<N>.json, and a step in MIGRATIONS
  that maps a stored config of schema N-1 to schema N (with notes where the old run cannot be expressed
  exactly). `scaling sweep migrate --store DIR` applies the steps to a store and re-keys its runs.

Schema 0 is every store written before identities were versioned: run.json has no "schema" and the id
hashed the full resolved config (every default filled in), so adding any field changed every id.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from scaling.config import Config, ConfigError, from_dict, to_dict
from scaling.identity_schema import IDENTITY_SCHEMA  # bumped there: stores read it without importing JAX
from scaling.optim import REGISTRY


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {dotted key: leaf value} (lists stay lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@functools.cache
def _optim_defaults(klass: type) -> dict[str, Any]:
    """The optim.* defaults of one optimizer's config class, optim.name aside (read only: callers copy)."""
    return {k: v for k, v in flatten(to_dict(klass()), "optim.").items() if k != "optim.name"}


# Outside optim every config has the same defaults; optim.name's default is the default config's (adamw),
# so a run of another optimizer always names it; every other optim.* default is its class's own.
_SHARED = {k: v for k, v in flatten(to_dict(Config())).items() if not k.startswith("optim.") or k == "optim.name"}
_ALL = {k: v for row in reversed(REGISTRY.values()) for k, v in _optim_defaults(row.config).items()} | _SHARED


def defaults(cfg: Config | None = None) -> dict[str, Any]:
    """{dotted key: default value} of the fields of `cfg`'s config, its optim fields read from the class
    optim.name selects (scaling.optim.section). Without cfg: every field any config has (the table
    tests/data/identity_defaults_v<IDENTITY_SCHEMA>.json snapshots)."""
    if cfg is None:
        return dict(_ALL)
    return {**_SHARED, **_optim_defaults(type(cfg.optim))}


def _config(cfg: Config | Mapping) -> Config:
    """cfg as a validated Config coerced to its fields' types (a resolved dict is parsed first)."""
    return from_dict(Config, to_dict(cfg) if isinstance(cfg, Config) else dict(cfg))


# How a run is laid out on devices, not what it computes: a run resumed on another mesh (orbax restores
# its checkpoint with the new shardings) is the same run; its numerics agree to float32 rounding.
LAYOUT_FIELDS = ("run.mesh.", "run.sharding_rules.")


def identity(cfg: Config | Mapping) -> dict:
    """{"schema": IDENTITY_SCHEMA, "config": {dotted key: value}} of every non-default field (LAYOUT_FIELDS
    aside)."""
    cfg = _config(cfg)
    base = defaults(cfg)
    flat = flatten(to_dict(cfg))
    return {"schema": IDENTITY_SCHEMA,
            "config": {k: v for k, v in flat.items()
                       if (k not in base or v != base[k]) and not k.startswith(LAYOUT_FIELDS)}}


def digest(cfg: Config | Mapping) -> str:
    """Full sha256 hex digest of the canonical JSON of identity(cfg) (a non-finite value is refused by name
    when identity() coerces the config: scaling.config_io)."""
    return hashlib.sha256(canonical_json(identity(cfg)).encode()).hexdigest()


def differing_keys(a: Config | Mapping, b: Config | Mapping) -> list[str]:
    """The dotted keys whose values differ between two configs' identities, sorted."""
    ia, ib = identity(a)["config"], identity(b)["config"]
    return sorted(k for k in set(ia) | set(ib) if ia.get(k, _MISSING) != ib.get(k, _MISSING))


_MISSING = object()


def check_same_run(config_json: str | Path, cfg: Config | Mapping) -> None:
    """Raise ConfigError unless the run directory's config.json (keys starting with "_" aside) has the
    identity of cfg. A config.json written before a field existed is the same run (the field reads as its
    default); one holding a field this code does not know, or no longer loading, is named and refused."""
    path = Path(config_json)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); refusing to overwrite it") from e
    if not isinstance(stored, dict):
        raise ConfigError(f"{path} does not hold a config object; refusing to overwrite it")
    body = {k: v for k, v in stored.items() if not k.startswith("_")}
    try:
        stored_cfg = from_dict(Config, body)
    except ConfigError as e:
        raise ConfigError(f"{path} was written by another version of this code and does not load here ({e}); "
                          "re-key its store with `scaling sweep migrate --store DIR`, or use a new --out "
                          "directory") from None
    keys = differing_keys(stored_cfg, cfg)
    if keys:
        key, base = keys[0], defaults()
        old = identity(stored_cfg)["config"].get(key, base.get(key))
        new = identity(cfg)["config"].get(key, base.get(key))
        raise ConfigError(f"{path.parent} holds a different run ({key}={old!r} in its config.json, {new!r} "
                          "here); use a new --out directory")


# ---------------------------------------------------------------- migrations between schemas
#
# MIGRATIONS[s] maps a stored config dict (nested, as run.json / config.json hold it) of schema s to
# schema s + 1 and returns (config, notes). A note says how the stored run differs from what the migrated
# config trains today, where no config expresses the old run exactly; a run with notes keeps its finished
# results (marked), and an unfinished one restarts (sweeps.migrate).

NOTE_VALIDATION = "validation"  # every note starts with its topic and a colon
NOTE_LOGGING = "norm logging"


def _schema0_to_1(config: dict) -> tuple[dict, list[str]]:
    """Schema 0 -> 1. Configs written before the batch-size-independent validation set (they hold
    run.eval_batches) were trained by code that differed in what the numbered comments say: mapped
    where a config expresses it, noted where none does. Later schema 0 configs map as they are."""
    cfg = copy.deepcopy(config)
    notes: list[str] = []
    model, param, optim, run = (cfg.setdefault(s, {}) for s in ("model", "param", "optim", "run"))
    base = defaults()
    if "eval_batches" in run:
        # 1. Validation was run.eval_batches batches of run.batch_size windows, batch i drawn from
        #    (run.data_seed, VAL, i). One batch is exactly today's set of eval_tokens = batch_size x context
        #    drawn with eval_seed = data_seed (same generator, same draw); more batches have no equivalent.
        batches = run.pop("eval_batches")
        bs, ctx = run.get("batch_size", base["run.batch_size"]), model.get("context", base["model.context"])
        seed = run.get("data_seed", base["run.data_seed"])
        run["eval_tokens"], run["eval_seed"] = batches * bs * ctx, seed
        if batches != 1:
            notes.append(f"{NOTE_VALIDATION}: the old, batch-size-dependent set (run.eval_batches={batches} "
                         f"batches of run.batch_size={bs} sequences drawn with run.data_seed={seed}); mapped to "
                         f"run.eval_tokens={batches * bs * ctx}, run.eval_seed={seed}: as many tokens, other "
                         "sequences, so its val_loss is not comparable with runs of another batch size or data seed")
        # 2. Transformer residual-output projections always started x 1/sqrt(2L) (the flag was not read),
        #    except under Scion's boundary init; the MLP language model has no residual stream.
        transformer = model.get("kind", base["model.kind"]) == "transformer"
        scion_init = param.get("kind", base["param.kind"]) == "scion"
        name = optim.get("name", base["optim.name"])
        model["residual_out_init"] = transformer and not scion_init and name != "manifold_muon"
        # 3. Sign on the embedding divided by its fan-in (the vocabulary size).
        norms = optim.get("norms", {})
        if (name == "scion" or scion_init) and norms.get("embedding", base["optim.norms.embedding"]) == "sign":
            notes.append("scion: Sign on the embedding was divided by the vocabulary size (its fan-in), today "
                         "by 1 (untied) or the width (tied)")
        # 4. Manifold Muon started off the manifold.
        if name == "manifold_muon":
            notes.append("manifold muon: hidden matrices were not projected onto the Stiefel manifold at init"
                         + (" and residual-output projections started x 1/sqrt(2L)" if transformer and not scion_init
                            else ""))
        # 5. What metrics.jsonl logged as update and vector norms.
        notes.append(f"{NOTE_LOGGING}: update norms were divided by the step's base lr, not each leaf's own lr "
                     "(they differ where lr multipliers or a fallback lr apply), and a vector's norm was one RMS "
                     "over its stacked layers")
    # Fields the optimizer never reads had no effect; since schema 1 they must stay at their defaults
    # (e.g. optim.ns_method='direct', once the default, on an AdamW run): another optimizer's field is
    # dropped, Scion's geometry without Scion dropped, a Lion/Tiger field only a disabled AdamW read reset.
    name = optim.get("name", base["optim.name"])
    if optim and name in REGISTRY:
        klass = REGISTRY[name].config
        own = set(klass.fields())
        for field in [f for f in optim if f not in own and f"optim.{f}" in base]:
            del optim[field]
        unread = []
        if name != "scion" and param.get("kind", base["param.kind"]) != "scion":
            unread += ["norms", "radius"]
        if name in ("lion", "tiger") and optim.get("embedding_fallback", "adamw") != "adamw":
            unread += klass().adamw_only_fields()
        own_defaults = to_dict(klass())
        for field in unread:
            if field in optim:
                optim[field] = own_defaults[field]
    return cfg, notes


MIGRATIONS: dict[int, Callable[[dict], tuple[dict, list[str]]]] = {0: _schema0_to_1}


def upgrade(config: Mapping, schema: int) -> tuple[dict, list[str]]:
    """A stored config dict of `schema` -> (its config dict under IDENTITY_SCHEMA, notes of every step)."""
    if not isinstance(schema, int) or schema < 0 or schema > IDENTITY_SCHEMA:
        raise ConfigError(f"identity schema {schema!r} is not one this code knows (0 to {IDENTITY_SCHEMA}); "
                          "it was written by a newer version")
    cfg, notes = dict(config), []
    for s in range(schema, IDENTITY_SCHEMA):
        cfg, step_notes = MIGRATIONS[s](cfg)
        notes += step_notes
    return cfg, notes


__all__ = ["IDENTITY_SCHEMA", "MIGRATIONS", "canonical_json", "check_same_run", "defaults", "differing_keys",
           "digest", "flatten", "identity", "upgrade"]

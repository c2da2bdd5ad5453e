"""Run identity: the hash of the resolved run config, prefixed by its coordinates for readability.

    run id = "<coordinates>-<sha8>", e.g. "w64-lr3e-3-mup-1f2e3d4c"

The hash is sha256 of the canonical JSON of the full config (every default filled in, sorted keys, no
whitespace), so identity does not depend on axis order, on how a value was written in the experiment,
or on the readable prefix. Coordinates are ordered by key, so reordering axes keeps the prefix too.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Short names of common keys in the readable prefix (the hash alone decides identity).
SHORT = {
    "width": "w", "depth": "d", "n_heads": "h", "context": "T", "lr": "lr", "fallback_lr": "flr",
    "batch_size": "bs", "steps": "steps", "seed": "s", "data_seed": "ds", "weight_decay": "wd",
    "momentum": "mom", "base_width": "bw", "kind": "", "name": "", "schedule": "",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9.+_=-]")
MAX_PREFIX = 96


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config_dict: dict) -> str:
    """Full sha256 hex digest of the canonical JSON of a resolved config (as scaling.config.to_dict)."""
    return hashlib.sha256(canonical_json(config_dict).encode()).hexdigest()


def format_value(v: Any) -> str:
    """Compact, filesystem-safe: 0.003 -> 3e-3, 0.25 -> 0.25, 128 -> 128, True -> 1."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) and abs(v) >= 100_000:
        v = float(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) < 0.1 or abs(v) >= 1e5):
            mantissa, exponent = f"{v:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    return str(v)


def coords_prefix(coords: dict[str, Any]) -> str:
    parts = []
    for key in sorted(coords):
        name = key.rsplit(".", 1)[-1]
        short = SHORT.get(name, name)
        parts.append(f"{short}{format_value(coords[key])}")
    prefix = _UNSAFE.sub("_", "-".join(parts))
    return prefix[:MAX_PREFIX].rstrip("-")


def run_id(coords: dict[str, Any], digest: str, n: int = 8) -> str:
    prefix = coords_prefix(coords)
    return f"{prefix}-{digest[:n]}" if prefix else digest[:n]


def digest_of(run_id_: str) -> str:
    """The hash part of a run id (everything after the last '-')."""
    return run_id_.rsplit("-", 1)[-1]

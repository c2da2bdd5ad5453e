"""Run ids: the identity digest of the run's config, prefixed by its coordinates for readability.

    run id = "<coordinates>-<sha8>", e.g. "w64-lr3e-3-mup-1f2e3d4c"

sha8 is the first 8 hex digits of scaling.identity.digest(cfg): the sha256 of the versioned identity
{"schema", "config": every field that differs from its default}, canonical JSON. So identity depends
neither on axis order, nor on how a value was written in the experiment, nor on the readable prefix, and
adding a config field with a default keeps every id (scaling.identity states the rule and its schema
test). Coordinates are ordered by key, so reordering axes keeps the prefix too.
"""

from __future__ import annotations

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

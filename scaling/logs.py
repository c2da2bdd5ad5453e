"""Run-directory files: metrics.jsonl (append-only, repaired on resume) and atomic JSON writes."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

# summary.json statuses of a finished run: final, and data (a diverged run is never retrained)
FINAL_STATES = ("done", "diverged")


def write_bytes_atomic(path: str | Path, *chunks: bytes) -> None:
    """Write the chunks to a temporary file in the same directory (.NAME.tmpPID), fsync, then rename over
    the target: a killed writer leaves the old file or none, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=True).encode())


def read_jsonl(path: str | Path, require_step: bool = True) -> tuple[list[dict], list[int]]:
    """Parsed rows and the 1-based numbers of bad lines: not JSON objects, or (with require_step, as
    in metrics.jsonl) objects without an integer step. A missing file reads as empty."""
    rows, bad = [], []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if isinstance(row, dict) and (not require_step or isinstance(row.get("step"), int)):
            rows.append(row)
        else:
            bad.append(i)
    return rows, bad


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every line stays standard JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, flushed per line. A reader (writable=False: the
    processes other than 0 of a multi-process run) reads the same rows and writes nothing."""

    def __init__(self, path: str | Path, writable: bool = True):
        self.path = Path(path)
        self.writable = writable
        self._file = None

    def restart_at(self, step: int) -> list[dict]:
        """Keep the valid rows with row.step <= step (the checkpoint), drop the rest, and reopen for
        appending. Corrupt lines (a crash mid-write) are reported with the path and dropped."""
        rows, bad = read_jsonl(self.path)
        kept = [r for r in rows if r["step"] <= step]
        if not self.writable:
            return kept
        if bad:
            warnings.warn(f"{self.path}: dropped {len(bad)} corrupt line(s) (line {bad[0]} first)", stacklevel=2)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(r, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        return kept

    def append(self, row: dict) -> None:
        if not self.writable:
            return
        self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

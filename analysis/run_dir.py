"""Read one run directory (run.json, config.json, metrics.jsonl, summary.json, status) into a row and a table.

run.json, written by the sweep runner when it registers a run, gives the `experiment` column (the
experiment that registered the run; a run shared by two experiments is listed in both manifests,
<store>/_experiments/<name>.json, which is what `select_experiment` reads) and one `coord.<axis>`
column per swept coordinate (free variables of the sweep included, which config.json does not hold).

State of a run: summary.json present -> its status ("done" | "diverged"); else the status file's state
if it is pending/running/failed; a run that claims done/diverged without a summary, or has no status
at all, is "incomplete" (never silently counted as done). Corrupt metrics lines (e.g. truncated by a
crash) are skipped with a LoadWarning naming the file and line numbers. A JSON file that does not parse
is named in a LoadWarning and in the row's `unreadable_files` column (`scaling analyze` leaves such runs
out: what they ran or reached is unknown).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from analysis.errors import LoadWarning

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "status", "run.json")
SIGNATURE = "_signature"  # column of the runs table holding the run's file signature (cache key)
UNREADABLE = "unreadable_files"  # column: the run's JSON files that did not parse, comma-separated (else None)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> dotted keys ({"optim": {"lr": 1}} -> {"optim.lr": 1}); lists become JSON strings."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _read_json(path: Path, unreadable: list[str]) -> dict | None:
    """A JSON object from path; None when missing, or corrupt (then with a LoadWarning, and the file's
    name appended to `unreadable`)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8 text
        warnings.warn(f"{path}: unreadable JSON, ignored ({e})", LoadWarning, stacklevel=3)
        unreadable.append(path.name)
        return None
    if not isinstance(data, dict):
        warnings.warn(f"{path}: expected a JSON object, ignored", LoadWarning, stacklevel=3)
        unreadable.append(path.name)
        return None
    return data


def _normalise_curves(table: pa.Table) -> pa.Table:
    """Integer step/tokens -> int64, other numeric or null columns -> float64, so runs concatenate."""
    cols, names = [], []
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if name in ("step", "tokens") and pa.types.is_integer(t):
            col = col.cast(pa.int64())
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t) or pa.types.is_boolean(t):
            col = col.cast(pa.float64())
        cols.append(col)
        names.append(name)
    return pa.table(cols, names=names)


def read_metrics(path: Path) -> tuple[pa.Table, int]:
    """metrics.jsonl -> (table, number of corrupt lines skipped). Fast path: Arrow's JSON reader;
    on any parse problem (NaN/Infinity tokens, truncated lines) a line-by-line Python parse."""
    try:
        if path.stat().st_size == 0:
            return pa.table({}), 0
    except FileNotFoundError:
        return pa.table({}), 0
    try:
        return _normalise_curves(pa_json.read_json(path)), 0
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    rows, bad = [], []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                bad.append(lineno)
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} corrupt line(s) (line {shown})", LoadWarning, stacklevel=2)
    return (_normalise_curves(pa.Table.from_pylist(rows)) if rows else pa.table({})), len(bad)


def _state(status: dict | None, summary: dict | None) -> str:
    if summary is not None:
        s = summary.get("status")
        return s if s in ("done", "diverged") else "incomplete"
    state = (status or {}).get("state")
    return state if state in ("pending", "running", "failed") else "incomplete"


def signature(run_dir: Path) -> str:
    """Sizes and mtimes of a run's files: changes whenever the run writes anything we read."""
    parts = []
    for name in RUN_FILES:
        try:
            st = os.stat(run_dir / name)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append("-")
    return "|".join(parts)


def _read_run_arrow(run_dir: Path) -> tuple[dict, pa.Table]:
    run_dir = Path(run_dir)
    sig = signature(run_dir)
    unreadable: list[str] = []
    config = _read_json(run_dir / "config.json", unreadable)
    summary = _read_json(run_dir / "summary.json", unreadable)
    status = _read_json(run_dir / "status", unreadable)
    record = _read_json(run_dir / "run.json", unreadable)
    table, n_bad = read_metrics(run_dir / "metrics.jsonl")
    row: dict = {"run_id": run_dir.name, "state": _state(status, summary)}
    if record is not None:
        row["experiment"] = record.get("experiment")
        coords = record.get("coords")
        for k, v in (coords.items() if isinstance(coords, dict) else ()):
            row[f"coord.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    row["diverged"] = row["state"] == "diverged"
    row["error"] = (status or {}).get("error")
    for k, v in (summary or {}).items():
        if k != "status":
            row[k] = v
    for k, v in (status or {}).items():
        if k not in ("state", "error", "traceback"):
            row[f"status.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    row.update(flatten(config or {}))
    row["has_config"] = config is not None
    row[UNREADABLE] = ",".join(unreadable) or None
    row["n_metric_rows"] = table.num_rows
    row["n_bad_lines"] = n_bad
    row["last_step"] = pc.max(table["step"]).as_py() if "step" in table.column_names and table.num_rows else None
    row[SIGNATURE] = sig
    if table.num_rows:
        table = table.add_column(0, "run_id", pa.array([run_dir.name] * table.num_rows, pa.string()))
    return row, table


def read_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """One run directory -> (runs-table row as a dict, curves DataFrame with a run_id column)."""
    row, table = _read_run_arrow(Path(run_dir))
    row.pop(SIGNATURE, None)
    return row, table.to_pandas()

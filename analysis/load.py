"""Load run stores into two tidy tables: `runs` (one row per run) and `curves` (one row per logged step).

A store is a directory of run directories `<store>/<run_id>/` holding `run.json` (the run's experiment
and swept coordinates), `config.json`, `metrics.jsonl`, `summary.json` (written last, only for finished
runs) and `status` (see the sweep runner); `<store>/_experiments/<name>.json` lists each experiment's
run ids (`experiments`, `select_experiment`). The
consolidated tables `<store>/runs.parquet` and `<store>/curves.parquet` can be rebuilt from the run
directories at any time; `load_store` reuses them and re-reads only the runs whose files changed
(each run's file sizes and mtimes are kept as a signature in runs.parquet).

One run directory is read by analysis.run_dir (states, corrupt lines). Diverged and failed runs are
kept and flagged, never dropped.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.errors import AnalysisError, LoadWarning
from analysis.run_dir import (RUN_FILES, SIGNATURE, UNREADABLE, _normalise_curves, _read_run_arrow,  # noqa: F401
                              flatten, read_metrics, read_run, signature)

__all__ = ["RUN_FILES", "build_tables", "exclude_unreadable", "experiments", "flatten", "load_store", "read_metrics",
           "read_run", "run_dirs", "select_experiment", "signature", "write_tables"]

RUNS_FILE, CURVES_FILE = "runs.parquet", "curves.parquet"
STATES = ("pending", "running", "done", "diverged", "failed", "incomplete")
_BUILD_KEY = b"analysis.build_id"
_SIG = SIGNATURE


# ---------------------------------------------------------------- a whole store


def run_dirs(store: str | Path) -> list[Path]:
    """Subdirectories that look like runs (hold at least one of the run files), sorted by name; names
    starting with "_" or "." are the store's own (_experiments, _superseded, ...), never runs."""
    store = Path(store)
    if not store.is_dir():
        raise AnalysisError(f"store {str(store)!r} is not a directory")
    out = []
    with os.scandir(store) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith(("_", ".")) and \
                    any(os.path.exists(os.path.join(e.path, f)) for f in RUN_FILES):
                out.append(Path(e.path))
    return sorted(out, key=lambda p: p.name)


# final/best_val_bpb: the validation loss in bits per byte (null where the data's bytes per token are unknown)
SUMMARY_FIELDS = ("steps", "tokens", "final_train_loss", "final_val_loss", "best_val_loss", "final_val_bpb",
                  "best_val_bpb", "wall_time_s", "n_params", "n_params_nonembedding", "flops_per_token",
                  "diverged_step", "diverge_reason")
_HEAD = ("run_id", "state", "experiment", "diverged", "error") + SUMMARY_FIELDS
_TAIL = ("has_config", UNREADABLE, "n_metric_rows", "n_bad_lines", "last_step", _SIG)


def _tidy_runs(rows: list[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with a stable column order (ids and summary, config sorted, read stats) and
    types parquet accepts (a column mixing numbers and text keeps the text)."""
    runs = pd.DataFrame(rows)
    middle = sorted(c for c in runs.columns if c not in _HEAD and c not in _TAIL)
    runs = runs[[c for c in _HEAD if c in runs] + middle + [c for c in _TAIL if c in runs]]
    for c in runs.columns:
        if runs[c].dtype == object:
            vals = runs[c].dropna()
            if len(vals) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in vals):
                runs[c] = pd.to_numeric(runs[c])
            elif len({type(v) for v in vals}) > 1:  # mixed types cannot go to parquet: keep their text
                runs[c] = runs[c].map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return runs


def _read_many(dirs: Sequence[Path]) -> tuple[list[dict], list[pa.Table]]:
    if not dirs:
        return [], []
    workers = min(8, (os.cpu_count() or 1) + 2, len(dirs))
    with warnings.catch_warnings(record=True) as caught, ThreadPoolExecutor(workers) as pool:
        warnings.simplefilter("always", LoadWarning)
        results = list(pool.map(_read_run_arrow, dirs))
    for w in caught:  # re-issue from the calling thread so filters and pytest see them
        warnings.warn(w.message, w.category, stacklevel=3)
    return [r for r, _ in results], [t for _, t in results if t.num_rows]


def _concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return pa.table({"run_id": pa.array([], pa.string()), "step": pa.array([], pa.int64())})
    return pa.concat_tables(tables, promote_options="permissive")


def build_tables(store: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every run directory of a store (no cache) -> (runs, curves)."""
    rows, tables = _read_many(run_dirs(store))
    runs = _tidy_runs(rows).drop(columns=[_SIG], errors="ignore") if rows else _empty_runs()
    return runs, _curves_frame(_concat(tables))


def _empty_runs() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series([], dtype=str), "state": pd.Series([], dtype=str)})


def _curves_frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    if "run_id" in df:
        df["run_id"] = df["run_id"].astype("category")
    return df


def _read_cache(store: Path):
    """(runs table, curves table) from the parquet files if both exist and come from the same build."""
    rp, cp = store / RUNS_FILE, store / CURVES_FILE
    if not (rp.exists() and cp.exists()):
        return None
    try:
        meta_r = pq.read_schema(rp).metadata or {}
        meta_c = pq.read_schema(cp).metadata or {}
        if meta_r.get(_BUILD_KEY) is None or meta_r.get(_BUILD_KEY) != meta_c.get(_BUILD_KEY):
            return None
        return pq.read_table(rp), pq.read_table(cp)
    except (OSError, pa.ArrowException) as e:
        warnings.warn(f"{store}: cached tables unreadable, rebuilding ({e})", LoadWarning, stacklevel=3)
        return None


def _atomic_write(table: pa.Table, path: Path, build_id: bytes) -> None:
    meta = dict(table.schema.metadata or {})
    meta[_BUILD_KEY] = build_id
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _refresh(store: Path, refresh: str, write: bool) -> tuple[pa.Table, pa.Table]:
    dirs = run_dirs(store)
    cache = None if refresh == "always" else _read_cache(store)
    if cache is not None and not {_SIG, UNREADABLE} <= set(cache[0].column_names):
        cache = None  # tables written by something else, or by code that did not flag unreadable files: rebuild
    if cache is not None and refresh == "never":
        return cache
    sigs = {d.name: signature(d) for d in dirs}
    keep_ids: set[str] = set()
    old_runs = old_curves = None
    if cache is not None:
        old_runs, old_curves = cache
        old_sig = dict(zip(old_runs["run_id"].to_pylist(), old_runs[_SIG].to_pylist()))
        keep_ids = {r for r, s in old_sig.items() if sigs.get(r) == s}
        if keep_ids == set(sigs) and len(old_sig) == len(sigs):
            return cache
    stale = [d for d in dirs if d.name not in keep_ids]
    rows, tables = _read_many(stale)
    new_runs = pa.Table.from_pandas(_tidy_runs(rows), preserve_index=False) if rows else None
    runs_parts, curve_parts = [], tables
    if old_runs is not None and keep_ids:
        keep = pa.array(sorted(keep_ids))
        runs_parts.append(old_runs.filter(pc.is_in(old_runs["run_id"], keep)))
        if old_curves.num_rows:
            curve_parts = [old_curves.filter(pc.is_in(old_curves["run_id"], keep))] + tables
    if new_runs is not None:
        runs_parts.append(new_runs)
    runs = _concat_runs(runs_parts)
    curves = _concat([_normalise_curves(t) for t in curve_parts if t.num_rows])
    if runs.num_rows:
        runs = runs.take(pa.array(np.argsort(np.asarray(runs["run_id"].to_pylist(), dtype=object), kind="stable")))
    if write:
        try:
            build_id = uuid.uuid4().hex.encode()
            _atomic_write(curves, store / CURVES_FILE, build_id)
            _atomic_write(runs, store / RUNS_FILE, build_id)
        except OSError as e:
            warnings.warn(f"{store}: could not write the parquet tables ({e}); loaded in memory only",
                          LoadWarning, stacklevel=3)
    return runs, curves


def _concat_runs(parts: list[pa.Table]) -> pa.Table:
    parts = [p.replace_schema_metadata(None) for p in parts if p is not None and p.num_rows]
    if not parts:
        return pa.Table.from_pandas(_empty_runs().assign(**{_SIG: pd.Series([], dtype=str)}), preserve_index=False)
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a config field changed type between runs: go through pandas
        return pa.Table.from_pandas(_tidy_runs(pd.concat([p.to_pandas() for p in parts]).to_dict("records")),
                                    preserve_index=False)


def write_tables(store: str | Path, refresh: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Consolidate a store into runs.parquet and curves.parquet (atomic replace), re-reading only runs
    whose files changed (refresh="always" re-reads all). Returns (runs, curves)."""
    runs, curves = _refresh(Path(store), refresh, write=True)
    return runs.to_pandas().drop(columns=[_SIG], errors="ignore"), _curves_frame(curves)


def load_store(stores: str | Path | Iterable[str | Path], refresh: str = "auto", write: bool = True,
               curve_columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load one store or several into (runs, curves) DataFrames.

    refresh: "auto" (reuse the parquet tables, re-reading runs whose files changed), "always"
    (re-read every run) or "never" (trust the parquet tables if present). write: update the tables
    on disk. curve_columns: keep only these curve columns (run_id and step are always kept).
    With several stores, both tables get a `store` column and runs are identified by (store, run_id).
    """
    if refresh not in ("auto", "always", "never"):
        raise AnalysisError(f"load_store: refresh={refresh!r} must be 'auto', 'always' or 'never'")
    paths = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
    if not paths:
        raise AnalysisError("load_store: no store given")
    all_runs, all_curves = [], []
    for p in paths:
        runs_t, curves_t = _refresh(p, refresh, write)
        if curve_columns is not None:
            keep = ["run_id", "step"] + [c for c in curve_columns if c not in ("run_id", "step")]
            missing = [c for c in keep if c not in curves_t.column_names]
            if missing and curves_t.num_rows:
                raise AnalysisError(f"store {str(p)!r}: curves have no column {', '.join(map(repr, missing))}")
            curves_t = curves_t.select([c for c in keep if c in curves_t.column_names])
        runs = runs_t.to_pandas().drop(columns=[_SIG], errors="ignore")
        curves = curves_t.to_pandas()
        runs.insert(1, "store", str(p))
        if len(paths) > 1:
            curves.insert(0, "store", str(p))
        all_runs.append(runs)
        all_curves.append(curves)
    runs = pd.concat(all_runs, ignore_index=True) if len(all_runs) > 1 else all_runs[0]
    curves = pd.concat(all_curves, ignore_index=True) if len(all_curves) > 1 else all_curves[0]
    for col in ("store", "run_id"):
        if col in curves:
            curves[col] = curves[col].astype("category")
    return runs, curves


# ---------------------------------------------------------------- experiments of a store

EXPERIMENTS = "_experiments"


def experiments(store: str | Path) -> list[str]:
    """Names of the experiments recorded in a store (<store>/_experiments/<name>.json)."""
    d = Path(store) / EXPERIMENTS
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def _manifest_ids(store: Path, name: str) -> list[str] | None:
    path = store / EXPERIMENTS / f"{name}.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AnalysisError(f"experiment manifest {str(path)!r} is unreadable: {e}") from e
    ids = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(ids, list):
        raise AnalysisError(f"experiment manifest {str(path)!r} has no list of run ids under 'runs'")
    return [str(i) for i in ids]


def select_experiment(runs: pd.DataFrame, curves: pd.DataFrame, name: str,
                      stores: str | Path | Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs (and their curves) of one experiment: the run ids its manifest lists in each store
    (as `scaling sweep status --experiment` selects them), or, in a store without that manifest, the
    runs whose run.json names it (the `experiment` column). Raises when no store knows the experiment."""
    paths = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
    keep = np.zeros(len(runs), bool)
    found = False
    rid = runs["run_id"].astype(str).to_numpy()
    where = runs["store"].astype(str).to_numpy() if "store" in runs else np.full(len(runs), str(paths[0]))
    for p in paths:
        in_store = where == str(p)
        ids = _manifest_ids(p, name)
        if ids is not None:
            found = True
            keep |= in_store & np.isin(rid, ids)
        elif "experiment" in runs:
            hit = in_store & (runs["experiment"].astype(str).to_numpy() == name)
            found |= bool(hit.any())
            keep |= hit
    if not found:
        known = sorted({e for p in paths for e in experiments(p)} |
                       (set(runs["experiment"].dropna().astype(str)) if "experiment" in runs else set()))
        raise AnalysisError(f"no experiment {name!r} in {', '.join(map(str, paths))} "
                            f"(recorded: {', '.join(known) or 'none'})")
    sel = runs[keep].reset_index(drop=True)
    return sel, _curves_of(curves, sel)


def exclude_unreadable(runs: pd.DataFrame, curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, curves) without the runs a JSON file of which did not parse (the `unreadable_files` column),
    and a warning naming those files: what such a run ran (config.json, run.json) or reached (summary.json,
    status) is unknown, so fitting it could only mislead."""
    if UNREADABLE not in runs:
        return runs, curves, []
    bad = runs[UNREADABLE].notna() & (runs[UNREADABLE].astype(str) != "")
    if not bad.any():
        return runs, curves, []
    stores = runs["store"].astype(str) if "store" in runs else pd.Series("", index=runs.index)
    paths = [str(Path(store, run_id, name)) for store, run_id, names in
             zip(stores[bad], runs.loc[bad, "run_id"].astype(str), runs.loc[bad, UNREADABLE].astype(str))
             for name in names.split(",")]
    kept = runs[~bad].reset_index(drop=True)
    warning = f"left out {int(bad.sum())} run(s) with unreadable files: {', '.join(paths)}"
    return kept, _curves_of(curves, kept), [warning]


def _curves_of(curves: pd.DataFrame, sel: pd.DataFrame) -> pd.DataFrame:
    """The curves of the runs in sel (by store and run id when both tables have a store column)."""
    if curves is None or curves.empty or "run_id" not in curves:
        return curves
    ckey = curves["run_id"].astype(str)
    if "store" in curves and "store" in sel:
        pairs = set(zip(sel["store"].astype(str), sel["run_id"].astype(str)))
        cmask = np.array([(s, r) in pairs for s, r in zip(curves["store"].astype(str), ckey)], bool)
    else:
        cmask = ckey.isin(set(sel["run_id"].astype(str))).to_numpy()
    out = curves[cmask].reset_index(drop=True)
    for col in ("store", "run_id"):
        if col in out and isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].cat.remove_unused_categories()
    return out

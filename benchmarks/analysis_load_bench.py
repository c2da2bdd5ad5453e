"""Benchmark: loading a store of 2,000 runs x 1,000 logged steps into (runs, curves) DataFrames.

Compares analysis.load.load_store cold (reads every run directory with Arrow's JSON reader on a thread
pool and writes the parquet tables) and warm (reuses runs.parquet/curves.parquet after checking each
run's file signatures) against a plain loop that json-parses every line into dicts and builds the
same two DataFrames with pandas.

    python benchmarks/analysis_load_bench.py [--runs 2000] [--steps 1000] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis.load import flatten, load_store
from analysis.synthetic import big_store


def plain_loop(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, curves = [], []
    for d in sorted(p for p in store.iterdir() if p.is_dir()):
        row = {"run_id": d.name, **flatten(json.loads((d / "config.json").read_text()))}
        if (d / "summary.json").exists():
            row.update(json.loads((d / "summary.json").read_text()))
        for line in open(d / "metrics.jsonl"):
            rec = json.loads(line)
            rec["run_id"] = d.name
            curves.append(rec)
        runs.append(row)
    return pd.DataFrame(runs), pd.DataFrame(curves)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--store", type=Path, default=None, help="reuse/create the synthetic store here")
    args = ap.parse_args()
    tmp = None
    store = args.store
    if store is None:
        tmp = tempfile.TemporaryDirectory()
        store = Path(tmp.name) / "store"
    if not store.exists():
        t0 = time.perf_counter()
        big_store(store, args.runs, args.steps)
        print(f"generated {args.runs} runs x {args.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    for f in ("runs.parquet", "curves.parquet"):
        (store / f).unlink(missing_ok=True)
    size_mb = sum(f.stat().st_size for f in store.rglob("metrics.jsonl")) / 2**20

    t0 = time.perf_counter()
    runs, curves = load_store(store, refresh="always")
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs_w, curves_w = load_store(store)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs_p, curves_p = plain_loop(store)
    t_plain = time.perf_counter() - t0

    assert len(runs) == len(runs_w) == len(runs_p) and len(curves) == len(curves_w) == len(curves_p)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "runs": len(runs),
           "curve_rows": len(curves), "curve_columns": curves.shape[1], "metrics_jsonl_MB": round(size_mb),
           "load_store_cold_s": round(t_cold, 2), "load_store_warm_s": round(t_warm, 2),
           "plain_json_loop_s": round(t_plain, 2), "cold_speedup": round(t_plain / t_cold, 1),
           "warm_speedup": round(t_plain / t_warm, 1),
           "parquet_MB": round(sum((store / f).stat().st_size for f in ("runs.parquet", "curves.parquet")) / 2**20, 1),
           "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(out, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

"""The performance suite: every side-by-side measurement of benchmarks/ in one run, as a table of ratios and
`benchmarks/results/<machine>.json`.

    .venv/bin/python -m benchmarks --quick          # a few minutes on one core of a 2-core VM
    .venv/bin/python -m benchmarks                  # the full version (longer: more rounds, depths, widths)
    .venv/bin/python -m benchmarks --only throughput minimal --cpu 1

Parts (each reuses its benchmark's functions; every ratio is measured within this run):
  throughput  our train step vs the same model in PyTorch eager (if installed), MFU vs the matmul peak
              measured alongside (benchmarks/train_throughput.py)
  minimal     our full step vs a minimal hand-written JAX step of the same model (benchmarks/minimal_step.py)
  optim       optimizer step times: Muon/Scion/Lion overhead over AdamW, ours vs optax.contrib.muon
              (benchmarks/optim_step_bench.py)
  batched     K runs in one vmapped program vs the same runs one after another (benchmarks/sweep_bench.py)
  compile     compile time vs depth, unrolled vs lax.scan (and remat); a second process's compile time
              with and without the persistent compilation cache (benchmarks/compile_bench.py)
  memory      XLA's peak bytes of the train step vs parameters + optimizer state + gradients + activations,
              with and without model.remat (benchmarks/memory_bench.py)

The whole process is pinned to one core first (--cpu, default the last allowed one; --cpu -1: no pinning),
as a sweep worker is, before JAX starts: XLA sizes its CPU thread pool from the affinity mask, and other
processes on a shared machine then disturb one core, not the measurement's threads.
The machine name of the results file (`machine_name`): on an accelerator its device kind and count
("nvidia-h200-x1"), else the CPU model and core count ("cpu-amd-epyc-7b13-2c"), lower case, [a-z0-9-].
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# sizes per preset: smoke (tests, seconds), quick (a few minutes on one core), full
PRESETS = {
    "smoke": {"ref": ["model.width=32", "model.depth=1", "model.n_heads=2", "model.context=16", "run.batch_size=4"],
              "steps": 2, "rounds": 1, "depths": [1, 2], "layouts": ["unrolled", "scan"], "optim_widths": [32],
              "optim_repeats": 1, "batched_ks": [1, 2], "batched_steps": 3, "batched_model": "small",
              "compile_set": ["model.width=16", "model.context=16", "run.batch_size=2"]},
    "quick": {"ref": [], "steps": 10, "rounds": 3, "depths": [2, 8], "layouts": ["unrolled", "scan"],
              "optim_widths": [128], "optim_repeats": 3, "batched_ks": [1, 4], "batched_steps": 20,
              "batched_model": "small", "compile_set": []},
    "full": {"ref": [], "steps": 30, "rounds": 5, "depths": [1, 2, 4, 8, 16],
             "layouts": ["unrolled", "scan", "unrolled+remat", "scan+remat"], "optim_widths": [128, 256, 512],
             "optim_repeats": 7, "batched_ks": [1, 4, 8, 16], "batched_steps": 30, "batched_model": "small",
             "compile_set": []},
}


def machine_name() -> str:
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        name = f"{dev.device_kind}-x{jax.device_count()}"
    else:
        model = platform.processor() or platform.machine()
        try:
            model = next(line.split(":", 1)[1] for line in open("/proc/cpuinfo") if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"cpu-{model}-{os.cpu_count()}c"
    name = re.sub(r"\((r|tm)\)|processor|\d+-core", "", name.lower())
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name)).strip("-")


def row(measure: str, value, target: str = "", note: str = "") -> dict:
    return {"measure": measure, "value": value, "target": target, "note": note}


# ---------------------------------------------------------------- parts


def reference(p: dict) -> list[str]:
    from benchmarks.train_throughput import REFERENCE

    return REFERENCE + ["data.source=synthetic"] + p["ref"]


def part_throughput(p: dict) -> tuple[list[dict], dict]:
    from benchmarks.train_throughput import measure, torch_available

    raw = measure(reference(p), p["steps"], p["rounds"])
    med = raw["median_over_rounds"]
    rows = [row("MFU, our step (vs fp32 matmul peak)", med["mfu_jax"], "≥ 0.50",
                f"peak {med['matmul_peak_gflops']} GFLOP/s, {raw['median_tokens_per_s']['jax']} tok/s")]
    if "ratio_jax_over_torch" in med:
        rows.insert(0, row("tokens/s, ours / PyTorch eager", med["ratio_jax_over_torch"], "≥ 1.0",
                           f"torch {raw['torch']}, {raw['median_tokens_per_s']['torch']} tok/s"))
        rows.append(row("MFU, PyTorch eager", med["mfu_torch"]))
    elif not torch_available():
        rows.insert(0, row("tokens/s, ours / PyTorch eager", None, "≥ 1.0", "torch not installed: pip install .[bench]"))
    return rows, raw


def part_minimal(p: dict) -> tuple[list[dict], dict]:
    from benchmarks.minimal_step import ratio
    from scaling.config import load_config

    raw = ratio(load_config(overrides=reference(p)), p["steps"], p["rounds"])
    return [row("step time, ours / minimal hand-written JAX + optax.adamw", raw["ours_over_minimal_time"], "≤ 1.10",
                f"{raw['ours_tok_s']} vs {raw['minimal_tok_s']} tok/s")], raw


def part_optim(p: dict) -> tuple[list[dict], dict]:
    from benchmarks.optim_step_bench import bench_width

    only = ["adamw", "lion", "muon", "optax_muon", "scion"]
    raw = {str(d): bench_width(d, p["optim_repeats"], 5, only) for d in p["optim_widths"]}
    rows = []
    for d, r in raw.items():
        rows.append(row(f"optimizer step, ours Muon / optax.contrib.muon (d={d})", round(r["muon"] / r["optax_muon"], 3),
                        "≤ 1.0", f"{1e3 * r['muon']:.1f} vs {1e3 * r['optax_muon']:.1f} ms"))
        for name in ("muon", "scion", "lion"):
            rows.append(row(f"optimizer step, {name} / adamw (d={d})", round(r[name] / r["adamw"], 2), "",
                            f"adamw {1e3 * r['adamw']:.1f} ms"))
    return rows, {d: {k: round(v * 1e3, 3) for k, v in r.items()} for d, r in raw.items()}


def part_batched(p: dict) -> tuple[list[dict], dict]:
    from benchmarks import sweep_bench

    model, steps, ks = p["batched_model"], str(p["batched_steps"]), p["batched_ks"]
    cpu = str(min(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
    seq = sweep_bench.sub("sequential", model, str(max(ks)), steps, cpus=cpu, echo=False)[0]
    raw = {"sequential": seq, "batched": []}
    rows = []
    for k in ks:
        b = sweep_bench.sub("batched", model, str(k), steps, cpus=cpu, echo=False)[0]
        raw["batched"].append(b)
        rows.append(row(f"tokens/s, K={k} batched / sequential ({model} model)", round(b["tok_s"] / seq["tok_s"], 3),
                        "≥ 5 at K=16 (GPU)", f"{b['tok_s']} vs {seq['tok_s']} tok/s"))
    return rows, raw


def part_compile(p: dict) -> tuple[list[dict], dict]:
    from benchmarks.compile_bench import SMALL, cache_effect, depth_sweep, growth

    base = SMALL + p["compile_set"]
    depth_rows = depth_sweep(base, p["depths"], p["layouts"])
    lo, hi = min(p["depths"]), max(p["depths"])
    rows = []
    for layout in p["layouts"]:
        at = {r["depth"]: r["total_s"] for r in depth_rows if r["layout"] == layout}
        rows.append(row(f"compile time, depth {hi} / depth {lo} ({layout})", growth(depth_rows, layout),
                        "flat (≈1) with scan", f"{at[lo]} s → {at[hi]} s"))
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cache = cache_effect(base, cpu)
    rows.append(row("compile time of a 2nd process, persistent cache / none", cache["warm_over_no_cache"], "< 1",
                    f"{cache['no_cache']['total_s']} s → {cache['cache_warm']['total_s']} s, "
                    f"{cache['cache_warm']['cache_hits']} hits, {cache['cache_entries']} entries"))
    return rows, {"depth": depth_rows, "cache": cache}


def part_memory(p: dict) -> tuple[list[dict], dict]:
    from benchmarks.memory_bench import remat_pair

    raw = {"unrolled": remat_pair(reference(p)), "scan": remat_pair(reference(p) + ["model.scan_layers=true"])}
    rows = []
    for layout, r in raw.items():
        rows.append(row(f"peak bytes, XLA / estimate ({layout})", r["plain"]["peak_over_estimate"], "≈ 1",
                        f"{r['plain']['xla']['peak'] / 1e6:.1f} MB vs {r['plain']['estimate']['total'] / 1e6:.1f} MB"))
        rows.append(row(f"temp bytes, remat / plain ({layout})", r["remat_temp_over_plain"], "< 1",
                        f"{r['plain']['xla']['temp'] / 1e6:.1f} → {r['remat']['xla']['temp'] / 1e6:.1f} MB"))
    return rows, raw


PARTS: dict[str, Callable[[dict], tuple[list[dict], dict]]] = {
    "throughput": part_throughput, "minimal": part_minimal, "optim": part_optim, "batched": part_batched,
    "compile": part_compile, "memory": part_memory}


# ---------------------------------------------------------------- driver


def fmt(v) -> str:
    return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def table(rows: list[dict]) -> str:
    lines = ["| part | measure | value | target | note |", "|---|---|---:|---|---|"]
    lines += [f"| {r['part']} | {r['measure']} | {fmt(r['value'])} | {r['target']} | {r['note']} |" for r in rows]
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pin(cpu: int) -> None:
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu if cpu in allowed else allowed[-1]})


def run(parts: list[str], preset: str, out: Path | None) -> dict:
    p = PRESETS[preset]
    import jax

    t_start = time.time()
    rows, raw, errors = [], {}, {}
    for name in parts:
        t0 = time.time()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            part_rows, raw[name] = PARTS[name](p)
        except Exception as e:  # noqa: BLE001 - one failing part is reported, the others still run
            errors[name] = f"{type(e).__name__}: {e}"[-2000:]
            part_rows = [row("(failed)", None, "", errors[name].splitlines()[0][:200])]
        for r in part_rows:
            rows.append({"part": name, **r})
        print(f"# {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    result = {
        "machine": machine_name(), "preset": preset, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
        "cpus_used": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(), "load_average_end": os.getloadavg(), "wall_s": round(time.time() - t_start),
        "table": rows, "raw": raw, "errors": errors,
    }
    print(table(rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"# wrote {out} ({result['wall_s']} s; load average {os.getloadavg()})")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="preset", const="quick", help="a few minutes")
    size.add_argument("--smoke", action="store_const", dest="preset", const="smoke", help="tiny sizes (tests)")
    ap.add_argument("--only", nargs="+", choices=list(PARTS), help="a subset of the parts")
    ap.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last allowed; -1: none)")
    ap.add_argument("--out", help="results file (default benchmarks/results/<machine>.json; '-' for none)")
    args = ap.parse_args(argv)
    preset = args.preset or "full"
    pin(args.cpu if args.cpu is not None else max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else -1)
    out = None if args.out == "-" else Path(args.out) if args.out else RESULTS / f"{machine_name()}.json"
    result = run(args.only or list(PARTS), preset, out)
    return 1 if result["errors"] else 0

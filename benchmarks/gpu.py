"""The suite's GPU part, one part per process (benchmarks/gpu.sh runs each under its own timeout).

    python -m benchmarks.gpu env | mfu | batched | optim | sharded [--smoke] --out-dir DIR
    python -m benchmarks.gpu collect --out-dir DIR [--smoke]

  env      the devices JAX sees (the script stops here when there is no GPU, unless --smoke)
  mfu      a GPT-2-small-sized transformer (124M parameters: width 768, 12 layers, 12 heads, context 1024,
           vocab 50304, tied embeddings, GELU) in bfloat16 with float32 master weights: tokens/s and MFU
           against the bf16 matmul peak measured in the same run and against the device's nominal peak
  batched  K = 1, 4, 16 small models (the sweep benchmark's MLP LM) in one vmapped program vs the 16 runs
           one after another (benchmarks/sweep_bench.py); target ≥ 5× at K = 16
  optim    Muon, Scion and optax.contrib.muon step time over AdamW's on the 124M model's matrix shapes
           (benchmarks/optim_step_bench.py, 12 layers)
  sharded  a short `train` run with run.mesh over every device (data, then fsdp), tokens/s
  collect  the parts' JSON files into DIR/gpu_results.json and benchmarks/results/<machine>-gpu.json, a table

--smoke runs every part at tiny sizes on whatever device there is (CPU in the tests).
Each part writes DIR/gpu_<part>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GPT2_SMALL = ["model.width=768", "model.depth=12", "model.n_heads=12", "model.context=1024", "model.vocab_size=50304",
              "model.tie_embeddings=true", "model.mlp=gelu", "model.mlp_ratio=4", "run.batch_size=16",
              "run.compute_dtype=bfloat16", "data.source=synthetic", "optim.name=adamw", "optim.lr=6e-4"]
SMOKE_MODEL = ["model.width=32", "model.depth=1", "model.n_heads=2", "model.context=16", "model.vocab_size=512",
               "model.tie_embeddings=true", "model.mlp=gelu", "run.batch_size=4", "run.compute_dtype=bfloat16",
               "data.source=synthetic", "optim.name=adamw"]

# dense bf16 peak of the device kind (vendor data sheets, SXM parts, without sparsity), FLOP/s
NOMINAL_BF16 = {"h100": 989.4e12, "h200": 989.4e12, "a100": 312e12, "l4": 121e12, "b200": 2250e12}


def nominal_peak(kind: str) -> float | None:
    kind = kind.lower()
    return next((v for k, v in NOMINAL_BF16.items() if k in kind), None)


def part_env(smoke: bool) -> dict:
    import jax

    devs = jax.devices()
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device_count": len(devs),
            "devices": [str(d) for d in devs], "device_kind": devs[0].device_kind,
            "gpu": devs[0].platform == "gpu"}


def part_mfu(smoke: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.train_throughput import matmul_peak_gflops, measure

    overrides = SMOKE_MODEL if smoke else GPT2_SMALL
    n = 256 if smoke else 8192
    peak_fn = lambda: matmul_peak_gflops(n=n, reps=3 if smoke else 20, dtype=jnp.bfloat16)  # noqa: E731
    raw = measure(overrides, steps=2 if smoke else 20, rounds=1 if smoke else 3, with_torch=False, peak_fn=peak_fn)
    from scaling import models
    from scaling.config import load_config

    cfg = load_config(overrides=overrides)
    n_params = models.count_params(models.param_specs(cfg.model))["n_params"]
    tok_s = raw["median_tokens_per_s"]["jax"]
    nominal = nominal_peak(jax.devices()[0].device_kind)
    return {"n_params": n_params, "tokens_per_s": tok_s, "flops_per_token": raw["flops_per_token"],
            "mfu_vs_measured_bf16_peak": raw["median_over_rounds"]["mfu_jax"],
            "measured_bf16_peak_tflops": round(raw["median_over_rounds"]["matmul_peak_gflops"] / 1e3, 1),
            "mfu_vs_nominal_peak": round(tok_s * raw["flops_per_token"] / nominal, 3) if nominal else None,
            "nominal_peak_tflops": nominal and nominal / 1e12, "target": "≥ 0.45 of the nominal peak", "raw": raw}


def part_batched(smoke: bool) -> dict:
    from benchmarks import sweep_bench

    os.environ["BENCH_SET"] = json.dumps({"data.source": "synthetic", "run.eval_tokens": 1024})
    ks, steps = ([2], "2") if smoke else ([1, 4, 16], "30")
    seq = sweep_bench.sub("sequential", "small", str(max(ks)), steps, cpus=None, echo=False)[0]
    rows = []
    for k in ks:
        b = sweep_bench.sub("batched", "small", str(k), steps, cpus=None, echo=False)[0]
        rows.append({**b, "batched_over_sequential": round(b["tok_s"] / seq["tok_s"], 3)})
    return {"sequential": seq, "batched": rows, "target": "≥ 5× at K = 16"}


def part_optim(smoke: bool) -> dict:
    from benchmarks.optim_step_bench import bench_width

    d, layers, repeats = (32, 1, 1) if smoke else (768, 12, 7)
    r = bench_width(d, repeats, 5, ["adamw", "muon", "optax_muon", "scion"], layers=layers)
    return {"d": d, "layers": layers, "ms": {k: round(v * 1e3, 3) for k, v in r.items()},
            "muon_over_adamw": round(r["muon"] / r["adamw"], 2), "scion_over_adamw": round(r["scion"] / r["adamw"], 2),
            "muon_over_optax_muon": round(r["muon"] / r["optax_muon"], 3)}


def part_sharded(smoke: bool) -> dict:
    import jax

    from scaling.config import load_config
    from scaling.train import train

    n = jax.device_count()
    base = (SMOKE_MODEL if smoke else GPT2_SMALL + [f"run.batch_size={8 * n}"])  # later overrides win
    base = base + ["run.checkpoint_every=0", "run.log_every=5", "run.eval_tokens=2048"]
    steps = 2 if smoke else 20
    out = {"devices": n}
    for axis in ("data",) if smoke else ("data", "fsdp"):
        over = base + [f"run.mesh.{axis}={n}"]
        cfg = load_config(overrides=over + [f"run.steps={steps}"])
        with tempfile.TemporaryDirectory() as tmp:
            train(load_config(overrides=over + ["run.steps=2"]), f"{tmp}/warm")  # compiles
            t = time.perf_counter()
            train(cfg, f"{tmp}/timed")
            wall = time.perf_counter() - t
        out[axis] = {"tok_s": round(steps * cfg.run.batch_size * cfg.model.context / wall), "wall_s": round(wall, 2)}
    return out


PARTS = {"env": part_env, "mfu": part_mfu, "batched": part_batched, "optim": part_optim, "sharded": part_sharded}


def collect(out_dir: Path, smoke: bool) -> dict:
    """Every part's file into DIR/gpu_results.json and (not --smoke) benchmarks/results/<machine>-gpu.json."""
    from benchmarks.suite import RESULTS, machine_name

    parts = {}
    for name in PARTS:
        f = out_dir / f"gpu_{name}.json"
        parts[name] = json.loads(f.read_text()) if f.exists() else {"error": "no result (failed or timed out)"}
    table = ["| part | measure | value | target |", "|---|---|---:|---|"]
    mfu, bat, opt = parts["mfu"], parts["batched"], parts["optim"]
    if "tokens_per_s" in mfu:
        table.append(f"| mfu | {mfu['n_params'] / 1e6:.1f}M bf16: MFU vs nominal peak | {mfu['mfu_vs_nominal_peak']} | ≥ 0.45 |")
        table.append(f"| mfu | MFU vs measured bf16 matmul peak ({mfu['measured_bf16_peak_tflops']} TFLOP/s) | "
                     f"{mfu['mfu_vs_measured_bf16_peak']} | |")
    for b in bat.get("batched", []):
        table.append(f"| batched | K={b['K']} batched / sequential tok/s | {b['batched_over_sequential']} | ≥ 5 at K=16 |")
    if "muon_over_adamw" in opt:
        table += [f"| optim | Muon / AdamW step (d={opt['d']}, {opt['layers']} layers) | {opt['muon_over_adamw']} | |",
                  f"| optim | Scion / AdamW step | {opt['scion_over_adamw']} | |",
                  f"| optim | ours Muon / optax.contrib.muon | {opt['muon_over_optax_muon']} | ≤ 1.0 |"]
    for axis in ("data", "fsdp"):
        if axis in parts["sharded"]:
            table.append(f"| sharded | run.mesh.{axis}={parts['sharded']['devices']}: tok/s | "
                         f"{parts['sharded'][axis]['tok_s']} | |")
    for name, p in parts.items():
        if "error" in p:
            table.append(f"| {name} | (failed) | — | {p['error'][:120]} |")
    result = {"machine": machine_name(), "parts": parts, "table": table}
    print("\n".join(table))
    for path in [out_dir / "gpu_results.json"] + ([] if smoke else [RESULTS / f"{result['machine']}-gpu.json"]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=[*PARTS, "collect"])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.part == "collect":
        collect(out_dir, args.smoke)
        return 0
    t = time.perf_counter()
    try:
        result = PARTS[args.part](args.smoke)
    except Exception as e:  # noqa: BLE001 - recorded, and the script goes on with the next part
        result = {"error": f"{type(e).__name__}: {e}"[-3000:]}
    result["wall_s"] = round(time.perf_counter() - t, 1)
    (out_dir / f"gpu_{args.part}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, default=str))
    if args.part == "env" and not result.get("gpu") and not args.smoke:
        print("no GPU visible to JAX: " + ", ".join(result.get("devices", [])), file=sys.stderr)
        return 3
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())

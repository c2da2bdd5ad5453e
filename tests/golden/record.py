"""Record the golden runs: short configs whose metrics must stay bit-identical across refactors of the
training loop (tests/test_golden.py replays them). Run from the repository root, at the commit whose
numerics are the reference:

    python -m tests.golden.record

It rewrites tests/golden/*.jsonl and tests/golden/golden.json (the configs and the recording machine).
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

TINY_T = ["model.width=32", "model.depth=2", "model.n_heads=2", "model.context=16", "model.mlp_ratio=2"]
TINY_MLP = ["model.kind=mlp", "model.width=32", "model.depth=2", "model.context=16", "model.window=4"]
RUN = ["data.source=synthetic", "run.batch_size=4", "run.steps=8", "run.log_every=2", "run.checkpoint_every=0",
       "run.eval_tokens=256", "run.eval_per_octave=1"]

# name -> overrides; every optimizer, both models, SP and muP
SINGLE = {
    "transformer_adamw_sp": TINY_T + ["optim.name=adamw", "optim.lr=3e-3", "optim.weight_decay=0.1"],
    "transformer_adamw_mup": TINY_T + ["optim.name=adamw", "optim.lr=3e-3", "param.kind=mup", "param.base_width=16"],
    "transformer_muon": TINY_T + ["optim.name=muon", "optim.lr=2e-2", "optim.fallback_lr=3e-3"],
    "transformer_scion": TINY_T + ["optim.name=scion", "param.kind=scion", "optim.lr=1e-2",
                                   "model.norm_everywhere=true", "model.norm_gain=false"],
    "transformer_lion": TINY_T + ["optim.name=lion", "optim.lr=3e-4", "run.schedule=wsd"],
    "transformer_manifold_muon": TINY_T + ["optim.name=manifold_muon", "optim.lr=1e-2", "optim.dual_steps=10"],
    "mlp_adamw_mup": TINY_MLP + ["optim.name=adamw", "optim.lr=1e-2", "param.kind=mup", "param.base_width=16",
                                 "run.schedule=cosine", "run.warmup_steps=2"],
    "mlp_sgd_sp": TINY_MLP + ["optim.name=sgd", "optim.lr=0.1", "optim.b1=0.9"],
}
# one vmapped group of K = 4 runs differing in lr and seeds
BATCHED = {f"mlp_batched_{i}": TINY_MLP + ["optim.name=adamw", f"optim.lr={lr}", f"run.seed={i}"]
           for i, lr in enumerate((1e-3, 3e-3, 1e-2, 3e-2))}


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_all(out: Path) -> dict[str, list[dict]]:
    """Train every golden config into `out` and return its metrics rows by name."""
    from scaling.config import load_config
    from scaling.train import train, train_runs

    rows = {}
    for name, overrides in SINGLE.items():
        train(load_config(overrides=RUN + overrides), out / name)
        rows[name] = read_rows(out / name)
    cfgs = [load_config(overrides=RUN + o) for o in BATCHED.values()]
    train_runs(cfgs, [out / name for name in BATCHED])
    rows.update({name: read_rows(out / name) for name in BATCHED})
    return rows


def machine() -> dict:
    import jax

    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    isa = sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"machine": platform.machine(), "isa": isa, "jax": jax.__version__}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_all(Path(tmp))
    for name, r in rows.items():
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
    meta = {"run": RUN, "single": SINGLE, "batched": BATCHED, "recorded_on": machine()}
    (HERE / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"recorded {len(rows)} golden runs in {HERE}")


if __name__ == "__main__":
    main()

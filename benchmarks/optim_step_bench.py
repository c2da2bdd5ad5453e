"""Optimizer step time (update + apply_updates, jitted) on a transformer-shaped parameter tree, CPU.

Reference tree (issue 3): d_model in {128, 256, 512}, 4 layers, stacked (4, d, d) attention kernels,
(4, d, 4d) / (4, 4d, d) MLP kernels, vocab 256 embedding and unembedding, stacked gains.
Compared side by side in one process: AdamW, Lion, our Muon (default `optim.ns_method=auto`: the Gram
form for elongated kernels; and `direct` everywhere), optax.contrib.muon with the equivalent
settings (dimension numbers from roles, as in tests/test_optim_muon.py), Scion and manifold Muon.
Also the cost of logging every matrix's role norm (scaling.norms.role_norm, as the train loop does).

    .venv/bin/python benchmarks/optim_step_bench.py [--widths 128 256 512] [--repeats 7] [--only muon optax_muon]

Optimizers are timed round-robin (one step of each per round, the order reversed every other round) and
the median per optimizer is taken, so load from other processes hits all of them alike; the ratios are
the result. Manifold Muon takes seconds per step at d=512, so it gets 3 rounds and K=5 dual steps
(--manifold-dual-steps; the optimizer's default is 100).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import optax
from optax.contrib import MuonDimensionNumbers
from optax.contrib import muon as optax_muon

from scaling.config import optim_config
from scaling.norms import role_norm
from scaling.optim import build_optimizer
from scaling.testing import toy_grads, toy_params, toy_specs
from scaling.specs import tree_map_specs

LR, FALLBACK_LR = 0.02, 3e-3
MANIFOLD_REPEATS = 3


def optimizers(specs, manifold_dual_steps: int) -> dict[str, optax.GradientTransformation]:
    ones = tree_map_specs(lambda s: 1.0, specs)
    const = lambda t: 1.0  # noqa: E731
    dims = tree_map_specs(lambda s: MuonDimensionNumbers(len(s.shape) - 2, len(s.shape) - 1)
                          if s.role == "hidden" else None, specs)
    ours = lambda **kw: build_optimizer(optim_config(**kw), specs, ones, const)  # noqa: E731
    return {
        "adamw": ours(name="adamw", lr=LR, weight_decay=0.1),
        "lion": ours(name="lion", lr=LR, weight_decay=0.1),
        "muon": ours(name="muon", lr=LR, fallback_lr=FALLBACK_LR, weight_decay=0.1, nesterov=True),
        "muon_direct": ours(name="muon", lr=LR, fallback_lr=FALLBACK_LR, weight_decay=0.1, nesterov=True,
                            ns_method="direct"),
        "optax_muon": optax_muon(LR, beta=0.95, weight_decay=0.1, nesterov=True, adam_b1=0.9, adam_b2=0.95,
                                 adam_weight_decay=0.1, adam_learning_rate=FALLBACK_LR,
                                 muon_weight_dimension_numbers=dims),
        "scion": ours(name="scion", lr=LR, constrained=True),
        f"manifold_muon(K={manifold_dual_steps})": ours(name="manifold_muon", lr=LR, fallback_lr=FALLBACK_LR,
                                                        dual_steps=manifold_dual_steps),
    }


def stepper(tx, params, grads):
    step = jax.jit(lambda p, s, g: (lambda u_s: (optax.apply_updates(p, u_s[0]), u_s[1]))(tx.update(g, s, p)))
    state = {"p": params, "s": tx.init(params)}
    jax.block_until_ready(step(state["p"], state["s"], grads))  # compile

    def run() -> float:
        t0 = time.perf_counter()
        state["p"], state["s"] = step(state["p"], state["s"], grads)
        jax.block_until_ready(state["p"])
        return time.perf_counter() - t0

    return run


def norm_logger(specs, params):
    fn = jax.jit(lambda p: tree_map_specs(lambda s, w: role_norm(w, s.role), specs, p))
    jax.block_until_ready(fn(params))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params))
        return time.perf_counter() - t0

    return run


def bench_width(d: int, repeats: int, manifold_dual_steps: int, only: list[str] | None,
                layers: int = 4) -> dict[str, float]:
    specs = toy_specs(d=d, layers=layers, vocab=256, d_ff=4 * d)
    params = toy_params(specs, seed=0)
    grads = toy_grads(params, seed=1)
    runners = {name: stepper(tx, params, grads) for name, tx in optimizers(specs, manifold_dual_steps).items()
               if not only or name.split("(")[0] in only}
    if not only or "role_norm" in only:
        runners["role_norm logging"] = norm_logger(specs, params)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(repeats):
        order = list(runners) if i % 2 == 0 else list(runners)[::-1]  # no optimizer always runs after another
        for name in order:
            if name.startswith("manifold") and i >= MANIFOLD_REPEATS:  # seconds per step at d=512
                continue
            times[name].append(runners[name]())
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--manifold-dual-steps", type=int, default=5)
    ap.add_argument("--only", nargs="+",
                    help="a subset: adamw lion muon muon_direct optax_muon scion manifold_muon role_norm")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    results = {d: bench_width(d, args.repeats, args.manifold_dual_steps, args.only) for d in args.widths}
    names = list(next(iter(results.values())))
    print(f"jax {jax.__version__}, optax {optax.__version__}, {platform.processor() or platform.machine()}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s); median of {args.repeats} steps, ms")
    print("| optimizer | " + " | ".join(f"d={d}" for d in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{1e3 * r[name]:.1f}" for r in results.values()) + " |")
    ratios = (("muon", "optax_muon", "", "{:.2f}"), ("muon_direct", "optax_muon", "", "{:.2f}"),
              ("muon", "adamw", " (NS overhead)", "{:.1f}x"))
    for num, den, note, fmt in ratios:
        if {num, den} <= set(names):
            print(f"| {num} / {den}{note} | " + " | ".join(fmt.format(r[num] / r[den]) for r in results.values())
                  + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(d): r for d, r in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()

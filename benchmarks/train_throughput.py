"""Training tokens/s of our JAX transformer vs the same model in PyTorch eager, side by side, plus
model FLOP utilisation against the fp32 matmul peak measured in the same run.

Reference configuration (issue 2): d = 128, 4 layers, 4 heads, context 128, batch 32, GELU MLP x4,
RMSNorm with gains, RoPE, untied embeddings, AdamW, fp32, CPU.

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--rounds 5]

Needs the `bench` extra (pip install torch==2.13.0). JAX and PyTorch run alternately, `--rounds` times
each; every round is paired with a matmul-peak measurement taken just before and after it, and the
results are the medians of the per-round ratio and MFU (load from other processes and this VM's drift
hit both frameworks and the peak alike). PyTorch runs in a child process with glibc malloc left at its
defaults (`import scaling` tunes malloc for XLA, scaling/host_memory.py; the tuning made PyTorch ~20 %
slower), so each framework runs in its own best setting.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from scaling import models
from scaling.config import load_config
from scaling.data import batch as make_batch
from scaling.data import load_dataset
from scaling.program import Program
from scaling.hyper import program_config

REFERENCE = ["model.width=128", "model.depth=4", "model.n_heads=4", "model.context=128", "model.mlp=gelu",
             "model.mlp_ratio=4", "run.batch_size=32", "optim.name=adamw", "optim.lr=1e-3"]


# ----------------------------------------------------------------------------- JAX


def step_timer(program: Program, cfg, state: dict, tokens):
    """run(steps, offset) -> seconds of our compiled step over the batches offset .. offset + steps - 1
    (made before the clock starts); state {"s": TrainState} is updated in place."""
    hp = program.hyper_values(cfg)
    B, T = cfg.run.batch_size, cfg.model.context

    def run(steps: int, offset: int) -> float:
        batches = [make_batch(tokens, 0, offset + i, B, T + 1) for i in range(steps)]
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            state["s"], m = program.step(state["s"], b, jnp.int32(offset + i), False, hp)
        jax.block_until_ready(m["loss"])
        return time.perf_counter() - t0

    return run


def jax_runner(cfg, tokens):
    program = Program(program_config(cfg))
    run = step_timer(program, cfg, {"s": program.init_state(jax.random.PRNGKey(0), cfg)}, tokens)
    run(2, 0)  # compile
    return run


# ----------------------------------------------------------------------------- PyTorch


def torch_runner(cfg, tokens):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    D, L, H, T, V = cfg.model.width, cfg.model.depth, cfg.model.n_heads, cfg.model.context, cfg.model.vocab_size
    K, FF = D // H, cfg.model.d_ff
    inv_freq = 1.0 / (cfg.model.rope_theta ** (torch.arange(0, K, 2).float() / K))
    ang = torch.arange(T).float()[:, None] * inv_freq[None, :]
    cos, sin = ang.cos()[None, None], ang.sin()[None, None]

    def rope(x):  # x: (B, H, T, K), rotate-half form as in scaling/models/layers.py
        x1, x2 = x[..., : K // 2], x[..., K // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(D, eps=cfg.model.norm_eps), nn.RMSNorm(D, eps=cfg.model.norm_eps)
            self.qkv = nn.Linear(D, 3 * D, bias=False)
            self.o = nn.Linear(D, D, bias=False)
            self.up, self.down = nn.Linear(D, FF, bias=False), nn.Linear(FF, D, bias=False)

        def forward(self, x):
            Bx = x.shape[0]
            q, k, v = self.qkv(self.n1(x)).view(Bx, T, 3, H, K).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(Bx, T, D))
            return x + self.down(F.gelu(self.up(self.n2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.norm = nn.RMSNorm(D, eps=cfg.model.norm_eps)
            self.out = nn.Linear(D, V, bias=False)

        def forward(self, idx):
            x = self.emb(idx)
            for b in self.blocks:
                x = b(x)
            return self.out(self.norm(x))

    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    B = cfg.run.batch_size

    def run(steps: int, offset: int) -> float:
        batches = [torch.from_numpy(make_batch(tokens, 0, offset + i, B, T + 1)).long() for i in range(steps)]
        t0 = time.perf_counter()
        for b in batches:
            logits = model(b[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, V), b[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    run(2, 0)
    return run, torch.get_num_threads(), torch.__version__


# ----------------------------------------------------------------------------- peak


def matmul_peak_gflops(n: int = 1024, reps: int = 10, dtype=jnp.float32) -> float:
    """GFLOP/s of a jitted n x n matmul (fp32 by default): the machine's practical XLA peak."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x: x @ a)
    jax.block_until_ready(f(a))
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _torch_child(conn, overrides: list[str]) -> None:
    """Child process: build the PyTorch runner, then time `steps` steps at `offset` on request."""
    cfg = load_config(overrides=overrides)
    tokens = load_dataset(cfg.data, cfg.model.vocab_size).train
    run, threads, version = torch_runner(cfg, tokens)
    conn.send((threads, version))
    while (msg := conn.recv()) is not None:
        conn.send(run(*msg))


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def measure(overrides: list[str], steps: int = 30, rounds: int = 5, with_torch: bool = True,
            peak_fn=matmul_peak_gflops) -> dict:
    """Paired rounds of JAX and (if installed and asked) PyTorch: tokens/s, ratio and MFU against
    `peak_fn()` GFLOP/s (taken before and after each round), medians over rounds."""
    cfg = load_config(overrides=overrides)
    tokens = load_dataset(cfg.data, cfg.model.vocab_size).train
    specs = models.param_specs(cfg.model)
    flops_per_token = models.flops_per_token(cfg.model, specs)
    tokens_per_step = cfg.run.batch_size * cfg.model.context
    with_torch = with_torch and torch_available()

    run_jax = jax_runner(cfg, tokens)
    runs = {"jax": run_jax}
    threads = torch_version = None
    if with_torch:
        os.environ["SCALING_MALLOC_TUNING"] = "0"  # inherited by the spawned child before it imports scaling
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_torch_child, args=(child, overrides), daemon=True)
        proc.start()
        threads, torch_version = parent.recv()
        os.environ.pop("SCALING_MALLOC_TUNING")

        def run_torch(steps: int, offset: int) -> float:
            parent.send((steps, offset))
            return parent.recv()

        runs["torch"] = run_torch

    # This VM's speed drifts by 10-30 % over minutes, so every round is a paired measurement: the
    # matmul peak just before and just after it (the larger is that round's reference), JAX, PyTorch.
    for run in runs.values():  # an untimed warm-up round each: the first timed JAX round was 13-15 % slow
        run(steps, 0)
    result_rounds = []
    for r in range(rounds):
        peak_before = peak_fn()
        seconds = {name: run(steps, 100 + r * steps) for name, run in runs.items()}
        peak = max(peak_before, peak_fn())
        tps = {k: steps * tokens_per_step / t for k, t in seconds.items()}
        row = {"tokens_per_s": {k: round(v) for k, v in tps.items()}, "matmul_peak_gflops": round(peak, 1),
               **{f"mfu_{k}": round(v * flops_per_token / 1e9 / peak, 3) for k, v in tps.items()}}
        if with_torch:
            row["ratio_jax_over_torch"] = round(tps["jax"] / tps["torch"], 3)
        result_rounds.append(row)
    if with_torch:
        parent.send(None)
        proc.join()

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in result_rounds), 3)

    keys = ["mfu_jax", "matmul_peak_gflops"] + (["ratio_jax_over_torch", "mfu_torch"] if with_torch else [])
    return {
        "config": overrides,
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} XLA device(s), "
                   f"torch threads {threads}",
        "jax": jax.__version__, "torch": torch_version if with_torch else "not installed (pip install .[bench])",
        "flops_per_token": flops_per_token,
        "rounds": result_rounds,
        "median_over_rounds": {k: median(k) for k in keys},
        "median_tokens_per_s": {k: round(statistics.median(r["tokens_per_s"][k] for r in result_rounds))
                                for k in runs},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="override the reference config")
    args = ap.parse_args()
    print(json.dumps(measure(REFERENCE + args.set, args.steps, args.rounds), indent=1))


if __name__ == "__main__":
    main()

"""Side-by-side throughput of two commits' training loops on this machine: paired subprocess rounds.

    .venv/bin/python benchmarks/compare_commits.py BASE_COMMIT [--rounds 5] [--steps 60] [--k 4] [--reference]

    .venv/bin/python benchmarks/compare_commits.py BASE_COMMIT --same-core [--rounds 8] [--seconds 45] [--reference]

BASE_COMMIT is checked out into a temporary `git worktree`; the working tree is the other side. Each round
runs, for both sides in alternating order, one fresh process per measurement: `train` of one run (the
single-run path; today the K = 1 case of the one loop) and, with --k > 1, `train_runs` (or the base's
`train_batched`) of K runs in one vmapped program. Every process compiles first (a 2-step run of the same
program), then times whole runs (evaluations and checkpoints included) and prints tokens/s. The result is
the median over rounds of the per-round ratio new / base (load from other processes hits both sides of a
round alike), as JSON lines. Each measurement is pinned to one core, as sweep workers are: unpinned
processes on this loaded 2-core VM sometimes stalled for good inside XLA:CPU (with either commit's code).

--same-core: per round, both sides run AT ONCE, pinned to the same core, each training one run after
another for --seconds after its compile; the ratio is of tokens per CPU second of each process (user +
system time of all its threads). Whatever else loads the machine loads both sides alike and within the
same seconds, so rounds agree to ~1-2 % on a busy VM where sequential rounds spread 0.45-1.35.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ["model.width=64", "model.depth=2", "model.n_heads=2", "model.context=64", "model.mlp_ratio=4",
          "run.batch_size=16", "run.log_every=10", "run.checkpoint_every=0", "data.source=synthetic",
          "optim.name=adamw", "run.eval_tokens=2048"]

# the throughput benchmark's reference transformer (benchmarks/train_throughput.py)
REFERENCE = ["model.width=128", "model.depth=4", "model.n_heads=4", "model.context=128", "model.mlp=gelu",
             "model.mlp_ratio=4", "run.batch_size=32", "run.log_every=10", "run.checkpoint_every=0",
             "data.source=synthetic", "optim.name=adamw", "optim.lr=1e-3", "run.eval_tokens=4096"]

SNIPPET = r"""
import faulthandler, json, os, sys, tempfile, time
os.sched_setaffinity(0, {int(sys.argv[5])})  # one core, as a sweep worker (XLA sizes its pool from the mask)
faulthandler.dump_traceback_later(280)  # a stuck measurement says where (then measure() retries it)
import scaling
from scaling.config import load_config
mode, k, steps, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
def cfgs(n, s, tag):
    return [load_config(overrides=base + [f"run.steps={s}", f"optim.lr={1e-3 * (1 + i / 8 + tag)}"]) for i in range(n)]
if mode == "single":
    from scaling.train import train
    run = lambda cs, outs: [train(c, o) for c, o in zip(cs, outs)]
else:
    try:
        from scaling.train import train_runs as run
    except ImportError:
        from scaling.batched import train_batched as run
n = 1 if mode == "single" else k
with tempfile.TemporaryDirectory() as tmp:
    run(cfgs(n, 2, 10), [f"{tmp}/w{i}" for i in range(n)])  # compiles
    t = time.perf_counter()
    run(cfgs(n, steps, 0), [f"{tmp}/r{i}" for i in range(n)])
    wall = time.perf_counter() - t
c = cfgs(1, steps, 0)[0]
print(json.dumps({"file": scaling.__file__, "tok_s": n * steps * c.run.batch_size * c.model.context / wall}))
"""


PAIR_SNIPPET = r"""
import json, os, sys, tempfile, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import scaling
from scaling.config import load_config
from scaling.train import train
base, steps, seconds = json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cfg = lambda s, lr: load_config(overrides=base + [f"run.steps={s}", f"optim.lr={lr}"])
with tempfile.TemporaryDirectory() as tmp:
    train(cfg(2, 2e-3), f"{tmp}/warm")  # compiles
    print("ready", flush=True)
    sys.stdin.readline()  # both sides start together
    t, c = time.perf_counter(), os.times()
    runs = 0
    while time.perf_counter() - t < seconds:
        train(cfg(steps, 1e-3), f"{tmp}/r{runs}")
        runs += 1
    wall, c1 = time.perf_counter() - t, os.times()
tokens = runs * steps * cfg(steps, 1e-3).run.batch_size * cfg(steps, 1e-3).model.context
cpu = (c1.user - c.user) + (c1.system - c.system)
print(json.dumps({"file": scaling.__file__, "runs": runs, "tok_s": tokens / wall, "tok_cpu_s": tokens / cpu}))
"""


def measure_pair(trees: list[Path], steps: int, seconds: float, config: list[str]) -> list[dict]:
    """Both trees' train() at once on one core (--same-core): [{runs, tok_s, tok_cpu_s}] per tree."""
    core = str(min(os.sched_getaffinity(0)))
    procs = [subprocess.Popen([sys.executable, "-c", PAIR_SNIPPET, core, json.dumps(config), str(steps), str(seconds)],
                              cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tree in trees]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(proc.stderr.read()[-3000:])
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        rows = []
        for tree, proc in zip(trees, procs):
            out, err = proc.communicate(timeout=4 * seconds + 600)
            if proc.returncode:
                raise RuntimeError(err[-3000:])
            row = json.loads(out.splitlines()[-1])
            assert Path(row["file"]).resolve().is_relative_to(tree.resolve()), (row["file"], tree)
            rows.append(row)
        return rows
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def measure(tree: Path, mode: str, k: int, steps: int, config: list[str], tries: int = 3) -> float:
    """tok/s of one fresh process; a process that makes no progress for `timeout` s (seen on this loaded
    VM with both commits' code, blocked inside XLA:CPU) is killed and the measurement retried."""
    for attempt in range(tries):
        try:
            proc = subprocess.run([sys.executable, "-c", SNIPPET, mode, str(k), str(steps), json.dumps(config),
                                   str(min(os.sched_getaffinity(0)))],
                                  cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                                  capture_output=True, text=True, timeout=300)
            break
        except subprocess.TimeoutExpired:
            print(json.dumps({"retry": str(tree), "mode": mode, "attempt": attempt}), file=sys.stderr, flush=True)
    else:
        raise RuntimeError(f"{tree}: {mode} timed out {tries} times")
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    row = json.loads(proc.stdout.splitlines()[-1])
    assert Path(row["file"]).resolve().is_relative_to(tree.resolve()), (row["file"], tree)
    return row["tok_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--reference", action="store_true", help="the throughput benchmark's reference transformer")
    p.add_argument("--same-core", action="store_true", help="both sides at once on one core; CPU-time ratio")
    p.add_argument("--seconds", type=float, default=45.0, help="--same-core: training time per side and round")
    args = p.parse_args()
    config = REFERENCE if args.reference else CONFIG
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            if args.same_core:
                steps = args.steps if args.steps != 60 else 30  # whole runs: several per window
                rows = []
                for r in range(args.rounds):
                    order = [ROOT, base] if r % 2 == 0 else [base, ROOT]
                    got = dict(zip(order, measure_pair(order, steps, args.seconds, config)))
                    rows.append((got[ROOT], got[base]))
                    print(json.dumps({"round": r, "new": got[ROOT], "base": got[base],
                                      "ratio_cpu": round(got[ROOT]["tok_cpu_s"] / got[base]["tok_cpu_s"], 4)}),
                          file=sys.stderr, flush=True)
                ratios = [n["tok_cpu_s"] / b["tok_cpu_s"] for n, b in rows]
                print(json.dumps({"config": "reference" if args.reference else "small", "mode": "same-core",
                                  "steps": steps, "seconds": args.seconds, "rounds": args.rounds,
                                  "new_tok_cpu_s": round(statistics.median(n["tok_cpu_s"] for n, _ in rows)),
                                  "base_tok_cpu_s": round(statistics.median(b["tok_cpu_s"] for _, b in rows)),
                                  "ratio_median": round(statistics.median(ratios), 4),
                                  "ratios": [round(x, 4) for x in ratios]}), flush=True)
                return
            modes = ["single"] + (["batched"] if args.k > 1 else [])
            for mode in modes:
                ratios, new_tok, base_tok = [], [], []
                for r in range(args.rounds):
                    order = [(ROOT, new_tok), (base, base_tok)]
                    for tree, out in order if r % 2 == 0 else order[::-1]:
                        out.append(measure(tree, mode, args.k, args.steps, config))
                    ratios.append(new_tok[-1] / base_tok[-1])
                print(json.dumps({"config": "reference" if args.reference else "small", "mode": mode, "K": 1 if mode == "single" else args.k, "steps": args.steps,
                                  "rounds": args.rounds, "new_tok_s": round(statistics.median(new_tok)),
                                  "base_tok_s": round(statistics.median(base_tok)),
                                  "ratio_median": round(statistics.median(ratios), 3),
                                  "ratios": [round(x, 3) for x in ratios]}), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()

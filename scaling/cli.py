"""The `scaling` command's dispatcher and the subcommands of `scaling` itself: train | coord-check | data.

`scaling` knows nothing of sweeps or analysis: the composition root (scaling_cli, the console script)
passes their subcommand providers to `main(argv, providers=...)`, each a callable that adds its
subparsers (sweep, analyze, quickstart). Usage and config errors print one line naming the field or
file and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from scaling.config_io import ConfigError  # not scaling.config: `scaling sweep status` does not import JAX
from scaling.distributed import DistributedError  # imports no JAX either

EXIT_USAGE = 2


def _cmd_train(args: argparse.Namespace) -> int:
    from scaling.config import load_config
    from scaling.distributed import describe, initialize
    from scaling.trackers import Tracking, check_available, parse_kinds
    from scaling.train import train

    processes = _processes(args)  # flag errors first, before the config is read
    cfg = load_config(args.config, args.set or [])
    kinds = parse_kinds(args.track)
    check_available(kinds)
    tracking = Tracking(kinds, project=args.track_project, dir=args.track_dir) if kinds else None
    if processes.multi and cfg.run.mesh.size == 1:  # else every process would train its own copy of the run
        raise ConfigError(f"{processes.num_processes} processes need run.mesh over their devices "
                          "(e.g. --set run.mesh.data=<devices of all hosts>)")
    if initialize(processes).multi:  # before any JAX computation
        print(describe(), flush=True)
    summary = train(cfg, args.out, progress=not args.quiet and sys.stderr.isatty(), tracking=tracking)
    status = summary.get("status")
    loss = summary.get("final_val_loss") or summary.get("final_train_loss")
    print(f"{status}: {summary.get('steps')} steps, {summary.get('tokens'):,} tokens, loss {loss:.4f}"
          if isinstance(loss, float) else f"{status}: {summary}")
    print(f"logs: {os.path.join(args.out, 'metrics.jsonl')}  summary: {os.path.join(args.out, 'summary.json')}")
    return 0


def _add_config_arguments(p, example: str) -> None:
    """CONFIG and --set KEY=VALUE, as every command that builds a run config takes them."""
    p.add_argument("config", nargs="?", help="JSON or YAML config file (defaults for missing fields)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override a field, e.g. {example}")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes if OUT holds a checkpoint)")
    _add_config_arguments(p, example="optim.lr=1e-3")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_track_arguments(p)
    add_distributed_arguments(p)
    p.set_defaults(func=_cmd_train)


def add_distributed_arguments(p) -> None:
    """Multi-host: this process's place in a jax.distributed job (scaling.distributed; README, Multi-node)."""
    g = p.add_argument_group("multi-host (one process per host; default: JAX_COORDINATOR_ADDRESS, "
                             "JAX_NUM_PROCESSES, JAX_PROCESS_ID, else a single process)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's host and a free port, the same for all")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the job (one per host)")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1")
    g.add_argument("--local-device-ids", metavar="0,1,..", help="devices this process drives (default: all)")
    g.add_argument("--slurm", action="store_true", help="take the layout from this SLURM step (run under srun)")


def _processes(args: argparse.Namespace):
    """The flags' (or the environment's) multi-host layout; ConfigError names the flag."""
    from scaling import distributed

    explicit = [f for f, v in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                               ("--process-id", args.process_id), ("--local-device-ids", args.local_device_ids))
                if v is not None]
    if args.slurm:
        if explicit:
            raise ConfigError(f"--slurm takes the layout from SLURM's variables; drop {', '.join(explicit)}")
        return distributed.from_slurm()
    if not explicit:
        return distributed.from_environment()
    ids = None if args.local_device_ids is None else [i for i in args.local_device_ids.split(",") if i.strip()]
    return distributed.from_arguments(args.coordinator, args.num_processes, args.process_id, ids)


def add_track_arguments(p) -> None:
    """--track KINDS, --track-project, --track-dir: tracker mirrors of metrics.jsonl (scaling.trackers)."""
    p.add_argument("--track", default=None, metavar="wandb,tensorboard",
                   help="mirror metrics.jsonl to these trackers (W&B honours WANDB_MODE=offline and WANDB_DIR)")
    p.add_argument("--track-project", default="scaling", help="W&B project (default: scaling)")
    p.add_argument("--track-dir", default=None, help="tracker files (default: inside each run directory)")


def _parse_widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--widths={text!r} must be comma-separated integers, e.g. 64,128,256") from None
    if len(widths) < 2 or min(widths) <= 0:
        raise ConfigError(f"--widths={text!r} needs at least two positive widths (a slope needs two points)")
    return sorted(set(widths))


def _cmd_coord_check(args: argparse.Namespace) -> int:
    """Coordinate check of the config's model over widths: rows (csv, json), slopes and the figure."""
    import csv
    import dataclasses
    import json

    from scaling.config import load_config, to_dict
    from scaling.coord_check import COLUMNS, coord_check, slopes

    cfg = load_config(args.config, args.set or [])
    widths = _parse_widths(args.widths) if args.widths else [cfg.model.width * 2 ** k for k in range(4)]
    if args.steps < 1:
        raise ConfigError(f"--steps={args.steps} must be >= 1")
    if args.seeds < 1:
        raise ConfigError(f"--seeds={args.seeds} must be >= 1")
    param = cfg.param
    if param.kind in ("mup", "spectral") and not param.base_width:
        param = dataclasses.replace(param, base_width=cfg.model.width)
        print(f"param.base_width=0: using model.width={cfg.model.width} as the {param.kind} base width")
    for w in widths:  # validate every width before the first compile (ConfigError names the field)
        dataclasses.replace(cfg.model, width=w)
    rows = coord_check(cfg.model, param, cfg.optim, widths, steps=args.steps, batch_size=cfg.run.batch_size,
                       seed=cfg.run.seed, n_seeds=args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "coord_check.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    fitted = slopes(rows)
    summary = {"widths": widths, "steps": args.steps, "seeds": args.seeds, "config": to_dict(cfg),
               "param": to_dict(param), "rows": rows,
               "slopes_rms": [{"layer": k, "step": t, "slope": v} for (k, t), v in fitted.items()]}
    (out / "coord_check.json").write_text(json.dumps(summary, indent=1))
    last = args.steps
    print(f"log-log slope of rms vs width after {last} steps:")
    for (layer, t), v in fitted.items():
        if t == last:
            print(f"  {layer:16s} {v:+.2f}")
    # The figure is analysis's (above scaling in the layering): the composition root (scaling_cli) sets
    # `figure(rows, columns, title, path)` on this subparser; scaling never imports analysis.
    figure = getattr(args, "figure", None)
    if figure is None:
        print(f"no figure (no figure drawer registered); rows: {out / 'coord_check.csv'}")
        return 0
    title = f"Coordinate check: {cfg.model.kind}, {param.kind}, {cfg.optim.name} lr {cfg.optim.lr:g}"
    figure(rows, list(COLUMNS), title, out / "coord_check.png")
    print(f"rows: {out / 'coord_check.csv'}  figure: {out / 'coord_check.png'}")
    return 0


def _add_coord_check(sub) -> None:
    p = sub.add_parser("coord-check", help="activation size vs width over the first optimizer steps (muP check)")
    _add_config_arguments(p, example="param.kind=mup")
    p.add_argument("--widths", help="comma-separated widths (default: model.width x 1, 2, 4, 8)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps after init (default 3)")
    p.add_argument("--seeds", type=int, default=1, help="seeds to average over (default 1)")
    p.add_argument("--out", required=True, help="directory for coord_check.csv, coord_check.json, coord_check.png")
    p.set_defaults(func=_cmd_coord_check)


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from scaling.prepare import prepare

    meta = prepare(args.inputs, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                   val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, dtype=args.dtype,
                   separator=args.separator, progress=not args.quiet and sys.stderr.isatty())
    for split, info in meta["splits"].items():
        rate = f", {info['bytes_per_token']:.3f} bytes/token" if info["bytes_per_token"] else ""
        print(f"{split}: {info['documents']:,} documents, {info['tokens']:,} tokens in {len(info['shards'])} "
              f"shards{rate}")
    vocab = meta["tokenizer"]["vocab_size"]
    print(f"meta: {os.path.join(args.out, 'meta.json')}  train on it with: --set data.source=file "
          f"--set data.path={args.out} --set model.vocab_size={vocab}")
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="data preparation: scaling data prepare")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("prepare", help="tokenize text (files, JSONL, HF datasets dirs) into llm.c token shards")
    q.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text file or JSON-lines file of {\"text\": ...} (either optionally .gz), HF datasets directory, "
                        "or a glob")
    q.add_argument("--out", required=True, help="output directory (shards, tokenizer.json, meta.json)")
    which = q.add_mutually_exclusive_group()
    which.add_argument("--tokenizer", help="a Hugging Face tokenizer.json (default: train a byte-level BPE)")
    which.add_argument("--vocab-size", type=int, help="vocabulary of the BPE trained on the corpus (default 8192)")
    q.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of documents for validation, evenly spaced (default 0.1)")
    q.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    q.add_argument("--dtype", default="auto", choices=("auto", "uint16", "uint32"), help="token type (default auto)")
    q.add_argument("--separator", help="the tokenizer's document separator token (default: looked up)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_data_prepare)


def build_parser(providers: Sequence[Callable] = (), description: str | None = None) -> argparse.ArgumentParser:
    """`scaling`'s own subcommands, then each provider's (`provider(subparsers)` adds its parsers)."""
    parser = argparse.ArgumentParser(prog="scaling", description=description or __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_coord_check(sub)
    _add_data(sub)
    for provider in providers:
        provider(sub)
    return parser


def main(argv: list[str] | None = None, providers: Sequence[Callable] = (), description: str | None = None) -> int:
    args = build_parser(providers, description).parse_args(argv)
    warnings.simplefilter("default")
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DistributedError as e:  # a coordinator that never answered: not a usage error
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `scaling` command: train | sweep | analyze | quickstart.

Usage and config errors print one line naming the field or file and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from scaling.config import ConfigError

EXIT_USAGE = 2


def _cmd_train(args: argparse.Namespace) -> int:
    from scaling.config import load_config
    from scaling.train import train

    cfg = load_config(args.config, args.set or [])
    summary = train(cfg, args.out, progress=not args.quiet and sys.stderr.isatty())
    status = summary.get("status")
    loss = summary.get("final_val_loss") or summary.get("final_train_loss")
    print(f"{status}: {summary.get('steps')} steps, {summary.get('tokens'):,} tokens, loss {loss:.4f}"
          if isinstance(loss, float) else f"{status}: {summary}")
    print(f"logs: {os.path.join(args.out, 'metrics.jsonl')}  summary: {os.path.join(args.out, 'summary.json')}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes if OUT holds a checkpoint)")
    p.add_argument("config", nargs="?", help="JSON or YAML config file (defaults for missing fields)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.lr=1e-3")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job: the quickstart sweep (lr x width, SP vs muP, embedded Shakespeare), then its analysis."""
    import sweeps

    experiment = str(Path(sweeps.__file__).parent / "experiments" / "quickstart.py")
    sweep = ["sweep", "run", "quickstart", "--store", args.store, "--workers", str(args.workers)]
    code = main(sweep)
    if code != 0:
        return code
    print(f"\nstore: {args.store}  (rerun to resume; `scaling sweep status --store {args.store}`)")
    code = main(["analyze", experiment, "--store", args.store, "--out", args.out])
    if code == 0:
        print(f"figures and fits: {args.out}/")
    return code


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the main job: a small lr x width sweep (SP vs muP) and its figure")
    p.add_argument("--store", default="stores/quickstart", help="run store")
    p.add_argument("--out", default="results/quickstart", help="where fits.json and figures go")
    p.add_argument("--workers", type=int, default=2, help="worker processes (one per core on CPU)")
    p.set_defaults(func=_cmd_quickstart)


def _optional_subcommands(sub) -> None:
    """Subcommands provided by the sweeps and analysis packages, when present."""
    try:
        from sweeps import cli as sweeps_cli
    except ImportError:
        sweeps_cli = None
    if sweeps_cli is not None:
        sweeps_cli.add_subcommands(sub)
    try:
        from analysis import cli as analysis_cli
    except ImportError:
        analysis_cli = None
    if analysis_cli is not None:
        p = sub.add_parser("analyze", help="fit scaling laws and draw figures from a store")
        analysis_cli.add_arguments(p)
        p.set_defaults(func=analysis_cli.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_quickstart(sub)
    _optional_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`scaling analyze EXPERIMENT --store DIR --out results/<name>`: load, run a recipe, write results.

Writes <out>/fits.json, the recipe's figures (PNG) and a compact <out>/runs.parquet copy of the runs
table, and prints a summary table with the edge-of-grid and failed-fit warnings. Malformed input
gives one line "error: ..." on stderr and exit status 2. Also runs standalone: python -m analysis.cli.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings as pywarnings
from pathlib import Path

from analysis.errors import AnalysisError, LoadWarning
from analysis.fit import jsonable
from analysis.load import load_store
from analysis.recipes import RECIPES, resolve_experiment, run_recipe


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("experiment", metavar="EXPERIMENT",
                        help=f"a recipe name ({', '.join(sorted(RECIPES))}), an experiment .py file/module "
                             "defining ANALYSIS = {'recipe': ..., **options}, or an experiment recorded in the store")
    parser.add_argument("--store", action="append", required=True, metavar="DIR",
                        help="run store directory (repeat to combine stores)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory, e.g. results/<name>")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="options",
                        help="recipe option override, value parsed as JSON when possible (e.g. --set y=best_val_loss)")
    parser.add_argument("--refresh", choices=("auto", "always", "never"), default="auto",
                        help="re-read run directories: only changed ones (auto), all, or trust the parquet cache")
    return parser


def _parse_options(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise AnalysisError(f"--set {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(str(c).ljust(w) for c, w in zip(cols, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def run(args: argparse.Namespace) -> int:
    try:
        name, options = resolve_experiment(args.experiment, args.store)
        options.update(_parse_options(args.options))
        out_dir = Path(args.out)
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always", LoadWarning)
            runs, curves = load_store(args.store, refresh=args.refresh)
        load_warnings = [str(w.message) for w in caught if issubclass(w.category, LoadWarning)]
        out_dir.mkdir(parents=True, exist_ok=True)
        result = run_recipe(name, runs, curves, out_dir, **options)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["warnings"] = load_warnings + result.get("warnings", [])
    result["stores"] = [str(s) for s in args.store]
    result["options"] = options
    (out_dir / "fits.json").write_text(json.dumps(jsonable({k: v for k, v in result.items() if k != "summary"}),
                                                  indent=1, allow_nan=False))
    runs.to_parquet(out_dir / "runs.parquet", compression="zstd", index=False)
    print(f"{name}: {len(runs)} runs from {', '.join(args.store)} -> {out_dir}")
    print(format_table(result.get("summary", [])))
    if result["warnings"]:
        print(f"\nWARNINGS ({len(result['warnings'])}):")
        for w in result["warnings"]:
            print(f"  ! {w}")
    print(f"\nwrote fits.json, runs.parquet, {', '.join(result.get('figures', [])) or 'no figures'}")
    return 0


def add_subcommands(subparsers) -> None:
    """Add `analyze` to the `scaling` command (called by the composition root, scaling_cli)."""
    p = subparsers.add_parser("analyze", help="fit scaling laws and draw figures from a store")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="scaling analyze", description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

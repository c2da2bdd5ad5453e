"""`scaling analyze EXPERIMENT --store DIR --out results/<name>`: load, run a recipe, write results.

Writes <out>/fits.json, the recipe's figures (PNG) and a compact <out>/runs.parquet copy of the runs
table, and prints a summary table with the edge-of-grid and failed-fit warnings. Malformed input
gives one line "error: ..." on stderr and exit status 2. Also runs standalone: python -m analysis.cli.

`--experiment NAME` analyses only that experiment's runs (the run ids its manifest lists, as
`scaling sweep status --experiment` selects them); an EXPERIMENT recorded in the store selects its
own runs. `--help` lists every recipe's options with their defaults, read from the recipe functions'
signatures (so the list cannot go stale).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import tempfile
import textwrap
import warnings as pywarnings
from pathlib import Path

from analysis.errors import AnalysisError, AnalysisWarning, LoadWarning
from analysis.fit import jsonable
from analysis.load import exclude_unreadable, experiments, load_store, select_experiment
from analysis.recipe_tools import FINISHED
from analysis.recipes import RECIPES, resolve_experiment, run_recipe

_NOT_OPTIONS = ("runs", "curves", "out_dir")


def recipe_options(name: str) -> list[tuple[str, str]]:
    """(option, default as --set would write it, or "(required)") of a recipe, from its signature."""
    out = []
    for p in inspect.signature(RECIPES[name]).parameters.values():
        if p.name in _NOT_OPTIONS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            out.append((p.name, "(required)"))
            continue
        try:
            shown = json.dumps(p.default, separators=(",", ":"))
        except (TypeError, ValueError):
            shown = repr(p.default)
        out.append((p.name, shown))
    return out


def recipe_options_text(width: int = 100) -> str:
    """The help epilog: each recipe, its first docstring line and its options with their defaults."""
    lines = ["recipes and their options (--set KEY=VALUE on the command line, or keys of ANALYSIS):"]
    for name in sorted(RECIPES):
        doc = " ".join((inspect.getdoc(RECIPES[name]) or "").split("\n\n")[0].split())
        lines += textwrap.wrap(f"{name}: {doc}" if doc else name, width, initial_indent="  ",
                               subsequent_indent="    ")
        opts = "  ".join(f"{k}={v}" for k, v in recipe_options(name)) or "(no options)"
        lines += textwrap.wrap(opts, width, initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False)
    return "\n".join(lines)


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
    parser.add_argument("--experiment", default=None, metavar="NAME", dest="select",
                        help="analyse only this experiment's runs (as listed in <store>/_experiments/NAME.json)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = recipe_options_text()
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
        name, options = _resolve(args.experiment, args.store)
        options.update(_parse_options(args.options))
        out_dir = Path(args.out)
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always", LoadWarning)
            runs, curves = load_store(args.store, refresh=args.refresh)
        load_warnings = [str(w.message) for w in caught if issubclass(w.category, LoadWarning)]
        runs, curves, left_out = exclude_unreadable(runs, curves)
        load_warnings += left_out
        if runs.empty:
            unreadable = " (all of them with unreadable files)" if left_out else ""
            raise AnalysisError(f"no runs in {', '.join(args.store)}{unreadable}")
        selected = getattr(args, "select", None)
        if selected is None and _recorded(args.experiment, args.store):
            selected = args.experiment  # an experiment recorded in the store: its own runs
        n_all = len(runs)
        if selected is not None:
            runs, curves = select_experiment(runs, curves, selected, args.store)
            if runs.empty:
                raise AnalysisError(f"experiment {selected!r} has no runs in {', '.join(args.store)}")
        else:
            load_warnings += _mixed_experiments(runs, args.store)
        _refuse_all_diverged(runs, args.store)
        # Everything is written to a staging directory and moved into out_dir only once it all succeeded:
        # a failed analysis leaves out_dir as it was (not created, no figure of a recipe that failed later).
        with tempfile.TemporaryDirectory(prefix="scaling-analyze-") as stage:
            with pywarnings.catch_warnings(record=True) as caught:
                pywarnings.simplefilter("always", AnalysisWarning)
                result = run_recipe(name, runs, curves, Path(stage), **options)
            fit_warnings = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
            result["warnings"] = list(dict.fromkeys(load_warnings + result.get("warnings", []) + fit_warnings))
            result["stores"] = [str(s) for s in args.store]
            result["experiment"] = selected
            result["options"] = options
            fits = {k: v for k, v in result.items() if k != "summary"}
            (Path(stage) / "fits.json").write_text(json.dumps(jsonable(fits), indent=1, allow_nan=False))
            runs.to_parquet(Path(stage) / "runs.parquet", compression="zstd", index=False)
            _publish(Path(stage), out_dir)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    which = f" of experiment {selected!r} ({n_all} in the store)" if selected is not None else ""
    print(f"{name}: {len(runs)} runs{which} from {', '.join(args.store)} -> {out_dir}")
    print(format_table(result.get("summary", [])))
    if result["warnings"]:
        print(f"\nWARNINGS ({len(result['warnings'])}):")
        for w in result["warnings"]:
            print(f"  ! {w}")
    print(f"\nwrote fits.json, runs.parquet, {', '.join(result.get('figures', [])) or 'no figures'}")
    return 0


def _resolve(experiment: str, stores) -> tuple[str, dict]:
    """resolve_experiment, with an experiment file that exits or raises KeyboardInterrupt while it is
    imported reported as the file's fault (not taken for this command's own exit or Ctrl-C)."""
    try:
        return resolve_experiment(experiment, stores)
    except (SystemExit, KeyboardInterrupt) as e:
        stopped = "exited" if isinstance(e, SystemExit) else "was interrupted"
        raise AnalysisError(f"experiment {experiment} {stopped} at import ({type(e).__name__}): an experiment "
                            "file only declares BASE, SWEEP and ANALYSIS") from None


def _refuse_all_diverged(runs, stores) -> None:
    """Every finished run diverged: no loss is left to fit, and the figures' log axes would have no
    positive value (matplotlib raises). Said once, before anything is written."""
    if "state" not in runs:
        return
    finished = runs["state"].isin(FINISHED)
    if finished.any() and (runs.loc[finished, "state"] == "diverged").all():
        raise AnalysisError(f"all {int(finished.sum())} finished runs in {', '.join(map(str, stores))} diverged: "
                            "no loss to fit (lower the learning rates, or check run.diverge_factor)")


def _publish(stage: Path, out_dir: Path) -> None:
    """Move the staged files into out_dir (created now, when there is something to put in it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(stage.iterdir()):
        shutil.move(str(path), str(out_dir / path.name))


def _recorded(experiment: str, stores) -> bool:
    """EXPERIMENT names an experiment recorded in a store (not a recipe, not a .py file)."""
    if experiment in RECIPES or experiment.endswith(".py"):
        return False
    return any(experiment in experiments(s) for s in stores)


def _mixed_experiments(runs, stores) -> list[str]:
    names = sorted(runs["experiment"].dropna().astype(str).unique()) if "experiment" in runs else []
    names = names or sorted({e for s in stores for e in experiments(s)})
    if len(names) < 2:
        return []
    return [f"the store holds {len(names)} experiments ({', '.join(names)}): all {len(runs)} runs are analysed "
            "together; select one with --experiment NAME"]


def add_subcommands(subparsers) -> None:
    """Add `analyze` to the `scaling` command (called by the composition root, scaling_cli)."""
    p = subparsers.add_parser("analyze", help="fit scaling laws and draw figures from a store",
                              description=__doc__.split("\n")[0])
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="scaling analyze", description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

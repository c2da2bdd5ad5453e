"""The `scaling` command: the composition root above the three packages (the console script's target).

    scaling train | coord-check | data scaling's own subcommands (scaling.cli; data prepare: scaling.prepare)
    scaling sweep ...                  sweeps.cli, given analysis.load.write_tables to rebuild store tables
    scaling analyze ...                analysis.cli
    scaling report ...                 analysis.report: one self-contained HTML page of figures, fits, warnings
    scaling quickstart                 the main job: `sweep run quickstart`, then `analyze` on its store

`scaling` knows nothing of sweeps or analysis, `sweeps` knows nothing of analysis and `analysis` nothing of
either (tests/test_layering.py): everything that joins them lives here and is handed down by registration
(subcommand providers, the store-table writer, the coord-check figure). Imports of the packages above
scaling are deferred to the providers, so `scaling train` does not import them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling import cli as scaling_cli

DESCRIPTION = "The `scaling` command: train | coord-check | data | sweep | analyze | report | quickstart."


def _write_tables(store):
    from analysis.load import write_tables  # noqa: PLC0415 - pandas/pyarrow only when tables are rebuilt

    return write_tables(store)


def _coord_check_figure(rows: list[dict], columns: list[str], title: str, path: Path) -> None:
    import pandas as pd  # noqa: PLC0415

    from analysis.plots import plot_coord_check, save_figure  # noqa: PLC0415

    save_figure(plot_coord_check(pd.DataFrame(rows, columns=columns), title=title), path)


def add_sweep(sub) -> None:
    from sweeps import cli as sweeps_cli  # noqa: PLC0415

    sweeps_cli.add_subcommands(sub, tables=_write_tables)


def add_analyze(sub) -> None:
    from analysis import cli as analysis_cli  # noqa: PLC0415

    analysis_cli.add_subcommands(sub)


def add_report(sub) -> None:
    from analysis import report  # noqa: PLC0415

    report.add_subcommands(sub)


def add_coord_check_figure(sub) -> None:
    if "coord-check" in sub.choices:
        sub.choices["coord-check"].set_defaults(figure=_coord_check_figure)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job: the quickstart sweep (lr x width, SP vs muP, embedded Shakespeare), then its analysis."""
    import sweeps  # noqa: PLC0415

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


def add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the main job: a small lr x width sweep (SP vs muP) and its figure")
    p.add_argument("--store", default="stores/quickstart", help="run store")
    p.add_argument("--out", default="results/quickstart", help="where fits.json and figures go")
    p.add_argument("--workers", type=int, default=2, help="worker processes (one per core on CPU)")
    p.set_defaults(func=_cmd_quickstart)


PROVIDERS = (add_coord_check_figure, add_quickstart, add_sweep, add_analyze, add_report)


def build_parser() -> argparse.ArgumentParser:
    return scaling_cli.build_parser(PROVIDERS, DESCRIPTION)


# Commands that need no analysis parser: analysis's imports (scipy, matplotlib) take seconds, so
# `scaling sweep status` on a few hundred runs answers in a fraction of a second without them; any other
# first word (analyze, report, --help, a typo) builds every provider.
LIGHT_COMMANDS = ("train", "coord-check", "data", "sweep", "quickstart")
ANALYSIS_PROVIDERS = (add_analyze, add_report)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    light = bool(argv) and argv[0] in LIGHT_COMMANDS
    providers = tuple(p for p in PROVIDERS if not (light and p in ANALYSIS_PROVIDERS))
    return scaling_cli.main(argv, providers, DESCRIPTION)


__all__ = ["main", "build_parser", "PROVIDERS"]

"""`scaling sweep ...`: run an experiment on a store, show its status, list and plan experiments.

    scaling sweep run EXPERIMENT --store DIR [--workers N] [--executor local|slurm|ray]
    scaling sweep status --store DIR [--experiment NAME] [--top 10]
    scaling sweep plan EXPERIMENT [--store DIR]        expansion only: run ids, coordinates, state in DIR
    scaling sweep list                                 experiments under sweeps/experiments/
    scaling sweep consolidate --store DIR              rebuild runs.parquet and curves.parquet
    scaling sweep migrate --store DIR                  re-key runs registered by older code (sweeps.migrate)

EXPERIMENT is a name under sweeps/experiments/ or a path to a .py file. Spec errors exit with status 2
before anything is written. `sweep run` exits 0 when every run is done or diverged, 1 when some failed
after all their attempts, 75 when interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from sweeps.executors import EXECUTORS
from sweeps.lease import DEFAULT_TTL
from sweeps.store import DEFAULT_MAX_ATTEMPTS


def add_subcommands(subparsers, tables=None) -> None:
    """Add `sweep ...` to the `scaling` command. `tables(store) -> (runs, curves)` rebuilds runs.parquet and
    curves.parquet (the composition root passes analysis.load.write_tables; sweeps does not import analysis);
    without it `sweep run` skips the tables and `sweep consolidate` is an error."""
    sweep = subparsers.add_parser("sweep", help="run sweeps of many runs on a store (local, SLURM or Ray)")
    sub = sweep.add_subparsers(dest="sweep_command", required=True)

    p = sub.add_parser("run", help="expand an experiment, register its runs in the store and train them")
    p.add_argument("experiment", help="a name under sweeps/experiments/ or a path to a .py file")
    p.add_argument("--store", required=True, help="store directory (local disk or shared filesystem)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per GPU, else one single-threaded worker per CPU core)")
    p.add_argument("--executor", choices=EXECUTORS, default="local")
    p.add_argument("--batch", choices=("auto", "on", "off"), default=None,
                   help="train runs that differ only in scalar hyperparameters in one vmapped program "
                        "(default: the experiment's BATCH; auto = on accelerators only)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="tries of a run that raises")
    p.add_argument("--lease-ttl", type=float, default=DEFAULT_TTL, help="seconds without heartbeat before takeover")
    p.add_argument("--jax-cache", default=os.environ.get("SCALING_SWEEP_JAX_CACHE", "store"),
                   help="persistent compilation cache: 'store' (<store>/_cache/jax), a directory, or 'none'")
    p.add_argument("--no-progress", action="store_true", help="no live display")
    p.add_argument("--dry-run", action="store_true", help="expand and print the plan; write nothing")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE", default=[],
                   help="submitit parameter, e.g. slurm_partition=gpu timeout_min=240 gpus_per_node=1")
    p.add_argument("--slurm-cluster", default=None, help="submitit cluster: slurm (default: auto), local, debug")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    p.add_argument("--ray-address", default=None, help="ray.init address (auto, ray://host:10001; none: local)")
    p.add_argument("--ray-num-cpus", type=float, default=1)
    p.add_argument("--ray-num-gpus", type=float, default=0)
    p.set_defaults(func=cmd_run, tables=tables)

    p = sub.add_parser("status", help="counts per state and the best runs so far")
    p.add_argument("--store", required=True)
    p.add_argument("--experiment", default=None, help="only this experiment's runs")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("plan", help="expand an experiment and print its runs (writes nothing)")
    p.add_argument("experiment")
    p.add_argument("--store", default=None, help="also show each run's state in this store")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("list", help="experiments under sweeps/experiments/")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("consolidate", help="rebuild runs.parquet and curves.parquet from the run directories")
    p.add_argument("--store", required=True)
    p.set_defaults(func=cmd_consolidate, tables=tables)

    p = sub.add_parser("migrate", help="re-key the runs a store holds under an older identity schema (in place, "
                                       "idempotent, resumable)")
    p.add_argument("--store", required=True)
    p.set_defaults(func=cmd_migrate)


# ---------------------------------------------------------------- commands


def _expand(name: str):
    from sweeps.experiment import expand, load_experiment  # noqa: PLC0415

    experiment = load_experiment(name)
    return experiment, expand(experiment)


def cmd_plan(args: argparse.Namespace) -> int:
    experiment, runs = _expand(args.experiment)
    store = None
    if args.store:
        from sweeps.store import Store  # noqa: PLC0415

        store = Store(args.store)
        index = store.digest_index()
        _outdated_hint(store)
    print(f"{experiment.name}: {len(runs)} runs over {', '.join(experiment.sweep.axes)} (batch={experiment.batch})")
    for run in runs:
        state = ""
        if store is not None:
            existing = index.get(run.digest)
            state = store.status(existing)["state"] if existing else "new"
        print(f"  {run.id}  {state}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    from sweeps.experiment import list_experiments, load_experiment  # noqa: PLC0415

    for name in list_experiments():
        experiment = load_experiment(name)
        recipe = (experiment.analysis or {}).get("recipe", "")
        print(f"{name:24s} {len(experiment.sweep):5d} points  {recipe}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sweeps.store import Store  # noqa: PLC0415
    from sweeps.worker import WorkerOptions  # noqa: PLC0415

    check_run_options(args)
    experiment, runs = _expand(args.experiment)  # every spec error surfaces here, before any write
    if args.executor == "slurm":
        from sweeps.executors.slurm import import_submitit, parse_parameters  # noqa: PLC0415

        slurm_params = parse_parameters(args.slurm)
        _require(import_submitit)
    elif args.executor == "ray":
        from sweeps.executors.ray import import_ray  # noqa: PLC0415

        _require(import_ray)
    if args.dry_run:
        return cmd_plan(argparse.Namespace(experiment=args.experiment, store=args.store))
    store = Store(args.store)
    ids = store.register(experiment, runs)
    options = WorkerOptions(max_attempts=args.max_attempts, lease_ttl=args.lease_ttl,
                            batch=args.batch or experiment.batch, max_batch=args.max_batch, jax_cache=args.jax_cache)
    progress = not args.no_progress
    print(f"{experiment.name}: {len(ids)} runs in {store.root}", flush=True)
    if args.executor == "local":
        from sweeps.executors.local import run_local  # noqa: PLC0415

        code = run_local(store.root, experiment.name, args.workers, options, progress=progress)
    elif args.executor == "slurm":
        from sweeps.executors.slurm import run_slurm  # noqa: PLC0415

        code = run_slurm(store.root, experiment.name, args.workers or 1, options, slurm_params,
                         cluster=args.slurm_cluster, wait=not args.no_wait, progress=progress)
        if args.no_wait:
            return code
    else:
        from sweeps.executors.ray import run_ray  # noqa: PLC0415

        code = run_ray(store.root, experiment.name, args.workers or 1, options, address=args.ray_address,
                       num_cpus=args.ray_num_cpus, num_gpus=args.ray_num_gpus, progress=progress)
    _consolidate(store.root, getattr(args, "tables", None))
    print_status(store, ids, top=5)
    return code


# (option, attribute, lowest, highest): generous bounds that only refuse what cannot be meant. A lease is
# heartbeaten every ttl/4 through the filesystem, so below a second live runs would be taken over (trained
# twice); above a day a killed worker's run would wait that long to be resumed.
RUN_OPTION_BOUNDS = (("--workers", "workers", 1, 1024), ("--max-batch", "max_batch", 1, 1024),
                     ("--max-attempts", "max_attempts", 1, 100), ("--lease-ttl", "lease_ttl", 1.0, 86_400.0),
                     ("--ray-num-cpus", "ray_num_cpus", 0.0, 1024.0), ("--ray-num-gpus", "ray_num_gpus", 0.0, 64.0))


def check_run_options(args: argparse.Namespace) -> None:
    """Refuse a numeric option of `sweep run` out of its bounds (NaN included), naming it."""
    from scaling.api import ConfigError  # noqa: PLC0415

    for option, attr, lo, hi in RUN_OPTION_BOUNDS:
        value = getattr(args, attr)
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"{option}={value} must be between {lo} and {hi}")


def _require(importer) -> None:
    from scaling.api import ConfigError  # noqa: PLC0415

    try:
        importer()
    except ImportError as e:
        raise ConfigError(str(e)) from None


def _consolidate(root, tables) -> None:
    if tables is None:
        print("tables not rebuilt (no table writer registered: run `scaling sweep ...`)", file=sys.stderr)
        return
    try:
        runs, _ = tables(root)
        print(f"tables: {root}/runs.parquet ({len(runs)} runs), {root}/curves.parquet", flush=True)
    except ImportError as e:
        print(f"tables not rebuilt (analysis.load unavailable: {e})", file=sys.stderr)


def cmd_consolidate(args: argparse.Namespace) -> int:
    from scaling.api import ConfigError  # noqa: PLC0415

    tables = getattr(args, "tables", None)
    if tables is None:
        raise ConfigError("sweep consolidate: no table writer registered (run it as `scaling sweep consolidate`)")
    _consolidate(args.store, tables)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from scaling.api import ConfigError  # noqa: PLC0415
    from sweeps.store import Store  # noqa: PLC0415

    store = Store(args.store)
    if not store.root.is_dir():
        raise ConfigError(f"--store {args.store}: no such directory")
    _outdated_hint(store)
    ids = store.manifest(args.experiment)["runs"] if args.experiment else store.run_ids()
    print_status(store, ids, top=args.top)
    return 0


def _outdated_hint(store) -> None:
    """One line when the store needs `sweep migrate` (its old runs are not found by expansion until then)."""
    from scaling.api import IDENTITY_SCHEMA  # noqa: PLC0415

    old = store.outdated()
    if store.migrating():
        print(f"a migration of {store.root} is under way or was interrupted: run `scaling sweep migrate --store "
              f"{store.root}` (until then `sweep run` refuses this store)")
    elif old:
        schemas = ", ".join(str(s) for s in sorted(set(old.values())))
        print(f"{len(old)} runs were registered by older code (identity schema {schemas}, this code: "
              f"{IDENTITY_SCHEMA}): run `scaling sweep migrate --store {store.root}` (until then `sweep run` "
              "refuses this store)")


def cmd_migrate(args: argparse.Namespace) -> int:
    from sweeps.migrate import migrate  # noqa: PLC0415

    migrate(args.store)
    return 0


def print_status(store, run_ids: list[str], top: int = 10) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from sweeps.progress import counts_line, problem_lines, snapshot  # noqa: PLC0415

    console = Console(width=max(120, Console().width))
    snap = snapshot(store, run_ids, verify=True)  # a damaged run counts as damaged, not done
    console.print(counts_line(snap))
    for line in problem_lines(store, run_ids, snap):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    finished, failed = [], []
    for run_id in run_ids:
        status = store.status(run_id)
        if status["state"] == "failed":
            failed.append((run_id, status))
        summary = store.summary(run_id)
        if summary and summary.get("status") == "done" and run_id not in snap.damaged:
            loss = summary.get("final_val_loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                finished.append((loss, run_id, summary))
    if finished:
        finished.sort()
        table = Table(title=f"best {min(top, len(finished))} of {len(finished)} finished runs (final val loss)",
                      title_justify="left")
        for col in ("run", "val loss", "best val loss", "steps", "tokens", "wall s"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for loss, run_id, s in finished[:top]:
            table.add_row(run_id, f"{loss:.4f}", f"{s.get('best_val_loss') or float('nan'):.4f}", str(s.get("steps")),
                          f"{s.get('tokens') or 0:,}", f"{s.get('wall_time_s') or 0:.0f}")
        console.print(table)
    for run_id, status in failed[:top]:
        console.print(f"failed {run_id} (attempts {status.get('attempts')}): {status.get('error')}")

"""`scaling sweep ...`: run an experiment on a store, show its status, list and plan experiments.

    scaling sweep run EXPERIMENT --store DIR [--workers N] [--executor local|slurm|ray] [--track wandb,tensorboard]
    scaling sweep status --store DIR [--experiment NAME] [--top 10]   counts, best runs by coordinates
    scaling sweep plan EXPERIMENT [--store DIR]        expansion only: coordinates, derived values, run ids, state
    scaling sweep list                                 experiments under sweeps/experiments/
    scaling sweep consolidate --store DIR              rebuild runs.parquet and curves.parquet
    scaling sweep migrate --store DIR                  re-key runs registered by older code (sweeps.migrate)

`--track` mirrors every run's metrics to W&B and/or TensorBoard (scaling.trackers): the choice is kept in the
experiment's manifest, so the workers of every executor see it, and is not part of any run's identity; a
rerun without --track keeps it, `--track none` turns it off.

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
    p.add_argument("--track", default=None, metavar="wandb,tensorboard",
                   help="mirror every run's metrics.jsonl to these trackers, one tracker run per run id, tagged "
                        "with the sweep and its coordinates (W&B honours WANDB_MODE=offline and WANDB_DIR)")
    p.add_argument("--track-project", default=None, help="W&B project (default: the experiment's name)")
    p.add_argument("--track-dir", default=None, help="tracker files (default: inside each run directory)")
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
    """The experiment's runs as a table: one column per swept coordinate, one per derived value (a field the
    experiment computes, such as run.steps from a token budget), the state in --store, the run id."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from sweeps.progress import coordinate_columns  # noqa: PLC0415
    from sweeps.run_id import format_value  # noqa: PLC0415

    experiment, runs = _expand(args.experiment)
    store = None
    if args.store:
        from sweeps.store import Store  # noqa: PLC0415

        store = Store(args.store).view()
        index = store.digest_index()
        _outdated_hint(store)
    derived = derived_keys(experiment)
    columns = coordinate_columns([r.coords for r in runs], list(experiment.sweep.axes), ("state", "run id"))
    print(f"{experiment.name}: {len(runs)} runs over {', '.join(experiment.sweep.axes)} (batch={experiment.batch})"
          + (f"; derived: {', '.join(derived)}" if derived else ""))
    table = Table(box=None, pad_edge=False)
    derived_names = coordinate_columns([dict.fromkeys(derived)], derived, (*columns.values(), "state", "run id"))
    headers = [*columns.values(), *(f"{derived_names[k]} (derived)" for k in derived), *(["state"] if store else []),
               "run id"]
    for name in headers:
        table.add_column(name, justify="left" if name in ("state", "run id") else "right")
    for run in runs:
        cells = [format_value(run.coords[k]) if k in run.coords else "" for k in columns]
        cells += [format_value(config_value(run.config, k)) for k in derived]
        if store is not None:
            existing = index.get(run.digest)
            cells.append(store.status(existing)["state"] if existing else "new")
        table.add_row(*cells, run.id)
    Console(width=max(120, Console().width)).print(table)
    return 0


def derived_keys(experiment) -> list[str]:
    """The dotted keys the experiment's sweep derives (sweeps.spec.derived), in first-seen order."""
    from sweeps.spec import Derived  # noqa: PLC0415

    return list(dict.fromkeys(k for p in experiment.sweep.points for k, v in p.items()
                              if isinstance(v, Derived) and "." in k))


def config_value(cfg, key: str):
    """The value of a dotted key (run.steps) in a Config."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def cmd_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    from sweeps.experiment import list_experiments, load_experiment  # noqa: PLC0415

    for name in list_experiments():
        experiment = load_experiment(name)
        recipe = (experiment.analysis or {}).get("recipe", "")
        print(f"{name:24s} {len(experiment.sweep):5d} points  {recipe}")
    return 0


def _recorded_track(store, name: str) -> dict | None:
    """The tracker choice a previous `sweep run --track` recorded for this experiment (None: none yet)."""
    from scaling.api import ConfigError  # noqa: PLC0415

    try:
        return store.manifest(name).get("track")
    except ConfigError:  # not registered yet
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from sweeps.store import Store  # noqa: PLC0415
    from sweeps.worker import WorkerOptions  # noqa: PLC0415

    from scaling.api import check_trackers, parse_trackers  # noqa: PLC0415

    check_run_options(args)
    kinds = parse_trackers(getattr(args, "track", None))
    check_trackers(kinds)
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
    if getattr(args, "track", None) is None:  # a rerun without --track keeps the sweep's trackers
        track = _recorded_track(store, experiment.name)
    else:  # --track none turns them off
        track = {"kinds": list(kinds), "project": args.track_project, "dir": args.track_dir} if kinds else None
    ids = store.register(experiment, runs, track=track)
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
    print_status(store, ids, top=5, axes=list(experiment.sweep.axes))
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

    store = Store(args.store).view()  # every file read once for the whole report
    if not store.root.is_dir():
        raise ConfigError(f"--store {args.store}: no such directory")
    _outdated_hint(store)
    names = [args.experiment] if args.experiment else store.experiments()
    manifests = [store.manifest(n) for n in names] if args.experiment else _readable_manifests(store, names)
    ids = manifests[0]["runs"] if args.experiment else store.run_ids()
    axes = list(dict.fromkeys(a for m in manifests for a in m.get("axes") or []))
    print_status(store, ids, top=args.top, axes=axes)
    return 0


def _readable_manifests(store, names: list[str]) -> list[dict]:
    from scaling.api import ConfigError  # noqa: PLC0415

    out = []
    for name in names:
        try:
            out.append(store.manifest(name))
        except ConfigError:
            continue  # a corrupt manifest only loses its column order here
    return out


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


def print_status(store, run_ids: list[str], top: int = 10, axes: list[str] = ()) -> None:
    """Counts per state and the problems, then (top > 0) a table of the `top` best finished runs by final
    validation loss, the running ones and up to `top` failed ones: one column per swept coordinate, the
    state, losses and the run id (its directory's name). Each run's files are
    read once (Store.view) and finished runs are verified from the cache of verdicts (Store.damaged).
    axes: the order of the coordinate columns (the experiments' sweep axes)."""
    from rich.console import Console  # noqa: PLC0415

    from sweeps.progress import counts_line, problem_lines, snapshot  # noqa: PLC0415

    view = store.view()
    console = Console(width=max(160, Console().width))
    snap = snapshot(view, run_ids, verify=True)  # a damaged run counts as damaged, not done
    console.print(counts_line(snap))
    for line in problem_lines(view, run_ids, snap):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if top <= 0:
        return
    finished, failed = [], []
    for run_id in run_ids:
        status = view.status(run_id)
        if status["state"] == "failed":
            failed.append(run_id)
        elif status["state"] == "done" and run_id not in snap.damaged:
            loss = (view.summary(run_id) or {}).get("final_val_loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                finished.append((loss, run_id))
    finished.sort()
    rows = [r for _, r in finished[:top]] + [r for r, *_ in snap.running] + failed[:top]
    if rows:
        title = (f"best {min(top, len(finished))} of {len(finished)} finished runs (final val loss)"
                 + (f", {len(snap.running)} running" if snap.running else "")
                 + (f", {min(top, len(failed))} of {len(failed)} failed" if failed else ""))
        console.print(run_table(view, rows, title, snap, axes))
    for run_id in failed[:top]:
        status = view.status(run_id)
        console.print(f"failed {run_id} (attempts {status.get('attempts')}): {status.get('error')}", markup=False,
                      highlight=False, soft_wrap=True)


RUN_COLUMNS = ("state", "val loss", "best", "step", "trained", "wall s", "run id")  # best: best val loss


def run_table(store, run_ids: list[str], title: str, snap=None, axes: list[str] = ()):
    """A rich table of runs: one column per coordinate (in `axes` order), then RUN_COLUMNS (trained: tokens)."""
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from sweeps.progress import coordinate_columns, coordinates  # noqa: PLC0415
    from sweeps.run_id import format_value  # noqa: PLC0415

    coords = {r: coordinates(store, r) for r in run_ids}
    columns = coordinate_columns(list(coords.values()), list(axes), RUN_COLUMNS)
    running = {r: (step, steps, loss) for r, step, steps, loss in (snap.running if snap else [])}
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name in [*columns.values(), *RUN_COLUMNS]:
        table.add_column(name, justify="left" if name in ("state", "run id") else "right",
                         no_wrap=name == "run id")  # copied whole to find the run's directory
    for run_id in run_ids:
        state = store.status(run_id)["state"]
        s = store.summary(run_id) or {} if state in ("done", "diverged") else {}
        step = f"{running[run_id][0]}/{running[run_id][1]}" if run_id in running else str(s.get("steps", ""))
        values = [format_value(coords[run_id][k]) if k in coords[run_id] else "" for k in columns]
        table.add_row(*values, state, _loss(s.get("final_val_loss")), _loss(s.get("best_val_loss")), step,
                      f"{s['tokens']:,}" if isinstance(s.get("tokens"), int) else "",
                      f"{s['wall_time_s']:.0f}" if isinstance(s.get("wall_time_s"), (int, float)) else "",
                      run_id)
    return table


def _loss(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else ""

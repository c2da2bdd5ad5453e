"""The run store: one directory per run, on a local disk or a shared filesystem.

    <store>/<run-id>/run.json       {"id", "schema", "digest", "coords", "experiment", "config"}: written once at
                                    registration (schema: scaling.identity.IDENTITY_SCHEMA; "migrated" when
                                    `scaling sweep migrate` re-keyed the run from an older schema)
                    status          {"state": pending|running|done|diverged|failed, "attempts", "updated", ...};
                                    failed runs add "error" and "traceback"
                    lease           held while a worker trains the run (sweeps.lease)
                    events.jsonl    one line per start/finish/preemption/takeover/repair, for audit and tests
                    config.json, metrics.jsonl, summary.json, ckpt/     written by scaling.train
                    quarantine/     files set aside by a repair (never deleted)
    <store>/_experiments/<name>.json    the experiment's ordered run ids, ANALYSIS and source path
    <store>/_experiments/<name>.py      a copy of the experiment file as it was run
    <store>/runs.parquet, curves.parquet  consolidated tables (written by analysis.load, never by sweeps)
    <store>/_migration.json         the journal of a `scaling sweep migrate` under way (sweeps.migrate)
    <store>/_superseded/, _unmigrated/  runs a migration set aside (a duplicate; a config no longer valid)

A run is done only when its status says done (or diverged) AND summary.json agrees AND metrics.jsonl
holds exactly the rows such a run logs. `inspect` checks that; `repair` sets aside what does not
match so that training resumes from the newest checkpoint that precedes every damaged row.

Runs registered by older code (run.json with an older identity schema, or none: schema 0) are not
reused, trained or silently re-registered: `register` refuses the store until
`scaling sweep migrate --store DIR` has re-keyed them (`outdated`, `require_current`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from scaling.api import FINAL_STATES, IDENTITY_SCHEMA, Config, ConfigError, from_dict, read_jsonl, write_json_atomic
from sweeps.experiment import Experiment, RunSpec

STATES = ("pending", "running", "done", "diverged", "failed")
FINISHED = FINAL_STATES  # final, and data: the states of scaling.api.FINAL_STATES
EXPERIMENTS = "_experiments"
MIGRATION_JOURNAL = "_migration.json"
DEFAULT_MAX_ATTEMPTS = 3


@dataclasses.dataclass
class Health:
    """What the run directory says about a run."""

    state: str  # the status file's state ("pending" when there is none)
    attempts: int
    summary: dict | None
    problems: list[str]  # each names the file that is wrong
    safe_step: int  # metrics.jsonl is intact up to and including this step (-1: not even step 0)
    checkpoints: list[int]

    def finished(self) -> bool:
        return self.state in FINISHED and self.summary is not None and not self.problems

    def final(self, max_attempts: int) -> bool:
        return self.finished() or (self.state == "failed" and self.attempts >= max_attempts)


def checkpoint_steps(run_dir: Path) -> list[int]:
    try:
        return sorted(int(p.name) for p in (run_dir / "ckpt").iterdir() if p.name.isdigit())
    except FileNotFoundError:
        return []


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------ layout

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def run_ids(self) -> list[str]:
        """Every registered run, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.root)
                      if e.is_dir() and not e.name.startswith(("_", ".")) and os.path.exists(
                          os.path.join(e.path, "run.json")))

    def experiments(self) -> list[str]:
        d = self.root / EXPERIMENTS
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def manifest(self, name: str) -> dict:
        path = self.root / EXPERIMENTS / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(self.experiments()) or "none"
            raise ConfigError(f"store {self.root} has no experiment {name!r} (registered: {known})") from None
        except ValueError as e:
            raise ConfigError(f"{path} is corrupt ({e})") from e

    # ------------------------------------------------------------ registration

    def register(self, experiment: Experiment, runs: list[RunSpec]) -> list[str]:
        """Create the directories of new runs (status pending) and write the experiment's manifest.
        A run already in the store (same identity digest) keeps its directory, whatever its prefix.
        A store holding runs of an older identity schema is refused (ConfigError) before anything is written."""
        self.require_current()
        self.root.mkdir(parents=True, exist_ok=True)
        by_digest = self.digest_index()
        ids = []
        for run in runs:
            run_id = by_digest.get(run.digest) or self._free_id(run)
            d = self.run_dir(run_id)
            d.mkdir(exist_ok=True)
            if not (d / "run.json").exists():
                write_json_atomic(d / "run.json", {"id": run_id, "schema": IDENTITY_SCHEMA, "digest": run.digest,
                                                   "coords": run.coords, "experiment": experiment.name,
                                                   "config": dataclasses.asdict(run.config)})
            if not (d / "status").exists():
                self.write_status(run_id, "pending", attempts=0)
            by_digest[run.digest] = run_id
            ids.append(run_id)
        exp_dir = self.root / EXPERIMENTS
        exp_dir.mkdir(exist_ok=True)
        if experiment.source:
            shutil.copyfile(experiment.source, exp_dir / f".{experiment.name}.py.tmp{os.getpid()}")
            os.replace(exp_dir / f".{experiment.name}.py.tmp{os.getpid()}", exp_dir / f"{experiment.name}.py")
        write_json_atomic(exp_dir / f"{experiment.name}.json", {
            "name": experiment.name, "source": experiment.source, "analysis": experiment.analysis,
            "batch": experiment.batch, "axes": list(experiment.sweep.axes), "runs": ids, "registered": time.time()})
        return ids

    def records(self) -> dict[str, dict | None]:
        """Every registered run's run.json (None where it is unreadable), by run id."""
        out: dict[str, dict | None] = {}
        for run_id in self.run_ids():
            try:
                record = json.loads((self.run_dir(run_id) / "run.json").read_text())
                out[run_id] = record if isinstance(record, dict) else None
            except (OSError, ValueError):
                out[run_id] = None
        return out

    def digest_index(self) -> dict[str, str]:
        """digest -> run id of the runs of the current identity schema (an unreadable run.json, or one of
        another schema, is never reused)."""
        return {r["digest"]: run_id for run_id, r in self.records().items()
                if r is not None and schema_of(r) == IDENTITY_SCHEMA and isinstance(r.get("digest"), str)}

    def outdated(self) -> dict[str, int]:
        """run id -> identity schema of every run registered under an older schema than this code's."""
        return {run_id: schema_of(r) for run_id, r in self.records().items()
                if r is not None and schema_of(r) < IDENTITY_SCHEMA}

    def migrating(self) -> bool:
        """Whether a `scaling sweep migrate` is under way or was interrupted (its journal exists)."""
        return (self.root / MIGRATION_JOURNAL).exists()

    def require_current(self) -> None:
        """ConfigError unless every run has this code's identity schema and no migration is pending."""
        if not self.root.is_dir():
            return
        hint = f"run `scaling sweep migrate --store {self.root}`"
        if self.migrating():
            raise ConfigError(f"store {self.root}: a migration is under way or was interrupted "
                              f"({self.root / MIGRATION_JOURNAL}); {hint} to finish it")
        old = self.outdated()
        newer = {r: schema_of(rec) for r, rec in self.records().items()
                 if rec is not None and schema_of(rec) > IDENTITY_SCHEMA}
        if newer:
            run_id = min(newer)
            raise ConfigError(f"store {self.root}: run {run_id} has identity schema {newer[run_id]}, newer than "
                              f"this code's {IDENTITY_SCHEMA}; use the newer code")
        if old:
            schemas = ", ".join(str(s) for s in sorted(set(old.values())))
            raise ConfigError(f"store {self.root} holds {len(old)} runs registered by older code (identity schema "
                              f"{schemas}, this code: {IDENTITY_SCHEMA}); {hint} to re-key them before running")

    def _free_id(self, run: RunSpec) -> str:
        return free_id(run.id, run.digest, lambda name: self.run_dir(name).exists())

    # ------------------------------------------------------------ records

    def run_record(self, run_id: str) -> dict:
        path = self.run_dir(run_id) / "run.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} is unreadable ({e})") from e

    def config(self, run_id: str) -> Config:
        return from_dict(Config, self.run_record(run_id)["config"])

    def status(self, run_id: str) -> dict:
        path = self.run_dir(run_id) / "status"
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) and data.get("state") in STATES else {"state": "pending"}
        except (OSError, ValueError):
            return {"state": "pending"}

    def write_status(self, run_id: str, state: str, **fields: Any) -> dict:
        assert state in STATES, state
        record = {"state": state, "updated": time.time(), **fields}
        write_json_atomic(self.run_dir(run_id) / "status", record)
        return record

    def event(self, run_id: str, event: str, **fields: Any) -> None:
        """Append one line to the run's events.jsonl (one write call, so lines do not interleave)."""
        line = json.dumps({"t": round(time.time(), 3), "event": event, **fields}, sort_keys=True) + "\n"
        with open(self.run_dir(run_id) / "events.jsonl", "a") as f:
            f.write(line)

    def events(self, run_id: str) -> list[dict]:
        rows, _ = read_jsonl(self.run_dir(run_id) / "events.jsonl", require_step=False)
        return rows

    def summary(self, run_id: str) -> dict | None:
        try:
            data = json.loads((self.run_dir(run_id) / "summary.json").read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------ integrity

    def inspect(self, run_id: str) -> Health:
        d = self.run_dir(run_id)
        status = self.status(run_id)
        state, attempts = status["state"], int(status.get("attempts", 0) or 0)
        problems: list[str] = []
        summary = None
        summary_path = d / "summary.json"
        if summary_path.exists():
            summary = self.summary(run_id)
            if summary is None:
                problems.append(f"{summary_path} is unreadable")
        elif state in FINISHED:
            problems.append(f"status says {state} but {summary_path} is missing")
        if summary is not None and state in FINISHED and summary.get("status") != state:
            problems.append(f"{summary_path} says {summary.get('status')!r} but the status file says {state!r}")
        safe_step, metric_problems = self._check_metrics(run_id, summary)
        problems += metric_problems
        return Health(state, attempts, summary, problems, safe_step, checkpoint_steps(d))

    def _check_metrics(self, run_id: str, summary: dict | None) -> tuple[int, list[str]]:
        """(last step up to which metrics.jsonl is exactly what training writes, problems)."""
        path = self.run_dir(run_id) / "metrics.jsonl"
        if not path.exists():
            return -1, [f"{path} is missing"] if summary is not None else []
        from scaling.api import logged_steps  # noqa: PLC0415 - keeps `import sweeps.store` light

        try:
            expected = logged_steps(self.config(run_id).run)
        except ConfigError as e:
            return -1, [str(e)]
        lines = path.read_text().splitlines()
        safe, problems = -1, []
        rows: list[dict] = []
        for i, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    raise ValueError("not an object with an integer step")
            except ValueError:
                problems.append(f"{path}: line {i} is corrupt or truncated")
                break
            rows.append(row)
        if (summary or {}).get("status") == "diverged" and isinstance(summary.get("diverged_step"), int):
            d = summary["diverged_step"]
            expected = [n for n in expected if n < d] + [d]
        for k, row in enumerate(rows):
            want = expected[k] if k < len(expected) else None
            if row["step"] != want:
                problems.append(f"{path}: line {k + 1} has step {row['step']}, expected {want}")
                break
            safe = row["step"]
        if summary is not None and not problems:
            last = rows[-1]["step"] if rows else -1
            if last != summary.get("steps"):
                problems.append(f"{path} ends at step {last} but summary.json says {summary.get('steps')}")
        return safe, problems

    def repair(self, run_id: str, health: Health) -> dict:
        """Set aside the summary and every checkpoint newer than the intact part of metrics.jsonl, so that
        training resumes from the newest checkpoint that precedes the damage (or from scratch)."""
        d = self.run_dir(run_id)
        target = d / "quarantine" / time.strftime("%Y%m%d-%H%M%S") / f"{os.getpid()}"
        moved = []
        keep = [s for s in health.checkpoints if s <= health.safe_step]
        resume_from = keep[-1] if keep else 0
        victims = [d / "summary.json"] + [d / "ckpt" / str(s) for s in health.checkpoints if s > resume_from]
        if resume_from == 0:
            victims.append(d / "metrics.jsonl")
        for path in victims:
            if path.exists():
                target.mkdir(parents=True, exist_ok=True)
                dest = target / (f"ckpt-{path.name}" if path.parent.name == "ckpt" else path.name)
                os.replace(path, dest)
                moved.append(str(dest))
        return {"resume_from": resume_from, "moved": moved, "problems": health.problems}

    # ------------------------------------------------------------ views

    def counts(self, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        counts = {s: 0 for s in STATES}
        for run_id in self.run_ids() if run_ids is None else run_ids:
            counts[self.status(run_id)["state"]] += 1
        return counts


def schema_of(record: dict) -> int:
    """The identity schema a run.json was written under (none recorded: 0, before schemas existed)."""
    schema = record.get("schema", 0)
    return schema if isinstance(schema, int) and not isinstance(schema, bool) else 0


def free_id(run_id: str, digest: str, taken) -> str:
    """run_id, or the same prefix with a longer hash suffix if `taken(name)` (a sha8 collision)."""
    for n in (8, 16, 64):
        candidate = run_id if n == 8 else f"{run_id[:-8]}{digest[:n]}"
        if not taken(candidate):
            return candidate
    raise ConfigError(f"run id {run_id} and its longer forms are all taken by other runs")


__all__ = ["Store", "Health", "STATES", "FINISHED", "MIGRATION_JOURNAL", "checkpoint_steps", "free_id", "schema_of"]

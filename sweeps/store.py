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
    <store>/_superseded/, _unmigrated/  runs set aside, each with set_aside.json saying why: a copy of a run
                                    registered twice (merged by `sweep run`, or by a migration); a config no
                                    longer valid (a migration)
    <store>/_cache/verified.json    `sweep status`'s verdicts on finished runs, keyed by their files' size and mtime
    <store>/.staging-*/             a run directory being registered (renamed into place once complete)

A run is done only when its status says done (or diverged) AND summary.json agrees AND metrics.jsonl
holds exactly the rows such a run logs. `inspect` checks that; `repair` sets aside what does not
match so that training resumes from the newest checkpoint that precedes every damaged row. Only damage
to a run's own files counts: a config that no longer validates, or input data that moved, never makes a
finished run look damaged. Workers inspect and repair a run only under its lease.

Registration is atomic: a run directory is written under a hidden name and renamed into place, so a
directory under a run id always holds its run.json, and concurrent registrations of one experiment give
one directory per identity digest. Copies left by older code are merged by `register` (`merge_duplicates`).

Runs registered by older code (run.json with an older identity schema, or none: schema 0) are not
reused, trained or silently re-registered: `register` refuses the store until
`scaling sweep migrate --store DIR` has re-keyed them (`outdated`, `require_current`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from scaling.api import FINAL_STATES, IDENTITY_SCHEMA, ConfigError, from_dict, read_jsonl, write_json_atomic
from sweeps.lease import DEFAULT_TTL, LEASE, Lease, is_stale, new_owner_id

if TYPE_CHECKING:  # reading a store imports neither the config classes nor JAX (`sweep status`)
    from scaling.api import Config
    from sweeps.experiment import Experiment, RunSpec

STATES = ("pending", "running", "done", "diverged", "failed")
FINISHED = FINAL_STATES  # final, and data: the states of scaling.api.FINAL_STATES
EXPERIMENTS = "_experiments"
MIGRATION_JOURNAL = "_migration.json"
SUPERSEDED = "_superseded"
STAGING = ".staging-"
VERIFIED = "_cache/verified.json"
STAMPED = ("run.json", "status", "summary.json", "metrics.jsonl")  # the files inspect() judges
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
    unchecked: str | None = None  # why metrics.jsonl could not be checked (not damage: e.g. a config this
    # code no longer accepts)

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

    def register(self, experiment: Experiment, runs: list[RunSpec],
                 log: Callable[[str], None] = print, track: dict | None = None) -> list[str]:
        """Create the directories of new runs (status pending) and write the experiment's manifest (with
        track, the tracker choice of `sweep run --track` that every worker reads: {"kinds", "project", "dir"}).
        A run already in the store (same identity digest) keeps its directory, whatever its prefix; copies of
        one run registered by older code are merged first (`merge_duplicates`, reported through log).
        A store holding runs of an older identity schema is refused (ConfigError) before anything is written."""
        self.require_current()
        self.root.mkdir(parents=True, exist_ok=True)
        self.merge_duplicates(log)
        by_digest = self.digest_index()
        ids = []
        for run in runs:
            run_id = by_digest.get(run.digest) or self._create(run, experiment.name)
            by_digest[run.digest] = run_id
            ids.append(run_id)
        exp_dir = self.root / EXPERIMENTS
        exp_dir.mkdir(exist_ok=True)
        if experiment.source:
            shutil.copyfile(experiment.source, exp_dir / f".{experiment.name}.py.tmp{os.getpid()}")
            os.replace(exp_dir / f".{experiment.name}.py.tmp{os.getpid()}", exp_dir / f"{experiment.name}.py")
        write_json_atomic(exp_dir / f"{experiment.name}.json", {
            "name": experiment.name, "source": experiment.source, "analysis": experiment.analysis,
            "batch": experiment.batch, "axes": list(experiment.sweep.axes), "runs": ids, "registered": time.time(),
            "track": track})
        return ids

    def _create(self, run: RunSpec, experiment: str) -> str:
        """The id of a new run: its directory is written under a hidden name and renamed into place, so a
        peer registering the same run meanwhile either publishes first (and this finds its digest there) or
        finds ours. A name held by another digest is a sha8 collision: the next longer form is tried."""
        for candidate in id_forms(run.id, run.digest):
            while (holder := self._digest_at(candidate)) is None:
                staged = self._stage(run, candidate, experiment)
                try:
                    os.rename(staged, self.run_dir(candidate))  # fails if a peer published a directory there
                    return candidate
                except OSError as e:
                    shutil.rmtree(staged, ignore_errors=True)  # never published: nobody else knows it
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            if holder == run.digest:
                return candidate
        raise ConfigError(f"run id {run.id} and its longer forms are all taken by other runs")

    def _digest_at(self, run_id: str) -> str | None:
        """The digest registered under run_id; None when the name is free (nothing there, or an empty directory,
        which rename replaces); "" when it holds something else (no readable run.json)."""
        d = self.run_dir(run_id)
        try:
            with os.scandir(d) as entries:
                if next(entries, None) is None:
                    return None
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return ""
        try:
            record = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            return ""
        return (record.get("digest") or "") if isinstance(record, dict) else ""

    def _stage(self, run: RunSpec, run_id: str, experiment: str) -> Path:
        """A complete run directory under a hidden name (run_ids and analysis skip names starting with '.')."""
        staged = self.root / f"{STAGING}{run_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staged.mkdir()
        write_json_atomic(staged / "run.json", {"id": run_id, "schema": IDENTITY_SCHEMA, "digest": run.digest,
                                                "coords": run.coords, "experiment": experiment,
                                                "config": dataclasses.asdict(run.config)})
        write_json_atomic(staged / "status", {"state": "pending", "attempts": 0, "updated": time.time()})
        return staged

    # ------------------------------------------------------------ copies of one run

    def duplicates(self) -> dict[str, list[str]]:
        """digest -> the run ids of every identity registered in more than one directory (by older code,
        whose registration was not atomic), the copy to keep first (`keep_order`)."""
        return {key: ids for key, ids in self._by_digest().items() if len(ids) > 1}

    def _by_digest(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for run_id, r in self.records().items():
            if r is not None and schema_of(r) == IDENTITY_SCHEMA and isinstance(r.get("digest"), str):
                groups.setdefault(r["digest"], []).append(run_id)
        return {key: sorted(ids, key=self.keep_order) if len(ids) > 1 else ids for key, ids in groups.items()}

    def keep_order(self, run_id: str) -> tuple:
        """Sort key among copies of one run: finished first, then the furthest trained, then the shortest id."""
        status, d = self.status(run_id), self.run_dir(run_id)
        finished = status["state"] in FINISHED and (self.summary(run_id) or {}).get("status") == status["state"]
        started = status["state"] != "pending" or bool(status.get("attempts")) or (d / "metrics.jsonl").exists()
        return not finished, -max(checkpoint_steps(d), default=0), not started, len(run_id), run_id

    def orphans(self) -> list[str]:
        """Directories among the runs' that hold no run.json (a registration by older code that stopped
        half-way): no run, ignored by training and analysis; an empty one is reused by registration."""
        if not self.root.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(("_", "."))
                      and not os.path.exists(os.path.join(e.path, "run.json")))

    def merge_duplicates(self, log: Callable[[str], None] = print) -> dict[str, str]:
        """Keep one directory per identity: every other copy is moved to _superseded/ (never deleted) under its
        lease, so a copy a live worker holds is left for a later merge, and every manifest is pointed at the
        kept one. Returns {set-aside id: kept id}."""
        merged: dict[str, str] = {}
        for key, (keep, *extras) in self.duplicates().items():
            for extra in extras:
                dest = self._set_aside(extra, keep)
                if dest is None:
                    log(f"run {extra} is a copy of {keep} (identity digest {key[:8]}) but a worker holds it: "
                        "left in place; the next `sweep run` merges it")
                    continue
                merged[extra] = keep
                log(f"run {extra} is a copy of {keep} (identity digest {key[:8]}), which is kept: set aside in {dest}")
        if merged:
            self._repoint_manifests(merged)
        return merged

    def _set_aside(self, run_id: str, keep: str) -> Path | None:
        """Move run_id's directory to _superseded/ under its lease (None: a live worker holds it)."""
        d = self.run_dir(run_id)
        try:
            lease = Lease.acquire(d, f"merge-{new_owner_id()}", DEFAULT_TTL)
        except FileNotFoundError:  # a concurrent merge moved it
            return self.root / SUPERSEDED / run_id
        if lease is None:
            return None
        try:
            if lease.previous is not None:
                self.event(run_id, "takeover", worker=lease.owner, previous=lease.previous.get("owner"))
            reason = f"a copy of {keep} (the same identity digest), which is kept"
            write_json_atomic(d / "set_aside.json", {"reason": reason, "by": "sweep run", "kept": keep, "t": time.time()})
            dest = self.root / SUPERSEDED / run_id
            dest.parent.mkdir(exist_ok=True)
            n = 1
            while dest.exists():
                dest, n = self.root / SUPERSEDED / f"{run_id}.{n}", n + 1
            os.rename(d, dest)
        finally:
            lease.release()
        (dest / LEASE).unlink(missing_ok=True)
        return dest

    def superseded_by(self, run_id: str) -> str | None:
        """The run kept in place of run_id if run_id was set aside as a copy of it."""
        try:
            kept = json.loads((self.root / SUPERSEDED / run_id / "set_aside.json").read_text()).get("kept")
            return kept if isinstance(kept, str) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _repoint_manifests(self, merged: dict[str, str]) -> None:
        for name in self.experiments():
            try:
                manifest = self.manifest(name)
            except ConfigError:
                continue
            runs = list(dict.fromkeys(merged.get(r, r) for r in manifest.get("runs", [])))
            if runs != manifest.get("runs"):
                write_json_atomic(self.root / EXPERIMENTS / f"{name}.json", {**manifest, "runs": runs})

    def records(self) -> dict[str, dict | None]:
        """Every registered run's run.json (None where it is unreadable), by run id."""
        out: dict[str, dict | None] = {}
        for run_id in self.run_ids():
            try:
                record = self._read_record(run_id)
                out[run_id] = record if isinstance(record, dict) else None
            except (OSError, ValueError):
                out[run_id] = None
        return out

    def view(self) -> StoreView:
        """A read-only picture of this store for one report (each run's files read at most once)."""
        return StoreView(self.root)

    def digest_index(self) -> dict[str, str]:
        """digest -> run id of the runs of the current identity schema (an unreadable run.json, or one of
        another schema, is never reused); a digest registered twice is one run: the copy `keep_order` keeps."""
        return {key: ids[0] for key, ids in self._by_digest().items()}

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

    # ------------------------------------------------------------ records

    def _read_record(self, run_id: str) -> Any:
        """run.json parsed (OSError, ValueError when it cannot be)."""
        return json.loads((self.run_dir(run_id) / "run.json").read_text())

    def run_record(self, run_id: str) -> dict:
        try:
            return self._read_record(run_id)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.run_dir(run_id) / 'run.json'} is unreadable ({e})") from e

    def config(self, run_id: str) -> Config:
        from scaling.api import Config  # noqa: PLC0415

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
        """What the run's files say (reads only). A file that vanishes while it is read reads as missing."""
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
        safe_step, metric_problems, unchecked = self._check_metrics(run_id, summary)
        problems += metric_problems
        return Health(state, attempts, summary, problems, safe_step, checkpoint_steps(d), unchecked)

    def _check_metrics(self, run_id: str, summary: dict | None) -> tuple[int, list[str], str | None]:
        """(last step up to which metrics.jsonl is exactly what training writes, problems, why it could not be
        checked). Only the run's own files count: a config this code no longer accepts is not damage."""
        path = self.run_dir(run_id) / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return -1, [f"{path} is missing"] if summary is not None else [], None
        from scaling.api import logged_steps  # noqa: PLC0415 - keeps `import sweeps.store` light

        try:
            expected = logged_steps(self.config(run_id).run)
        except ConfigError as e:
            return -1, [], f"{path} not checked: {e}"
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
        return safe, problems, None

    def damaged(self, run_ids: Iterable[str]) -> dict[str, list[str]]:
        """run id -> problems (each naming its file) of every run of this code's identity schema whose status
        says finished but whose files disagree; a run a live worker holds is left to it. Verdicts are cached in <store>/_cache/verified.json
        by the size and mtime of the files inspect reads, so a refresh re-reads only runs that changed."""
        cache = self._read_verified()
        fresh, out = {}, {}
        current = {r for r, rec in self.records().items() if rec is not None and schema_of(rec) == IDENTITY_SCHEMA}
        for run_id in run_ids:
            if run_id not in current or self.status(run_id)["state"] not in FINISHED or self.leased(run_id):
                continue  # runs of older code are checked once migrated
            stamp = self._stamp(run_id)
            hit = cache.get(run_id)
            problems = hit["problems"] if isinstance(hit, dict) and hit.get("stamp") == stamp \
                else self.inspect(run_id).problems
            fresh[run_id] = {"stamp": stamp, "problems": problems}
            if problems:
                out[run_id] = problems
        if any(cache.get(r) != v for r, v in fresh.items()):
            try:
                (self.root / VERIFIED).parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.root / VERIFIED, {**cache, **fresh})
            except OSError:
                pass  # a read-only store: verified again next time
        return out

    def _read_verified(self) -> dict:
        try:
            data = json.loads((self.root / VERIFIED).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _stamp(self, run_id: str) -> list:
        d, stamp = self.run_dir(run_id), []
        for name in STAMPED:
            try:
                st = os.stat(d / name)
                stamp.append([st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                stamp.append(None)
        return stamp

    def leased(self, run_id: str) -> bool:
        """Whether a live worker holds the run's lease."""
        path = self.run_dir(run_id) / LEASE
        return path.exists() and not is_stale(path)

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


class StoreView(Store):
    """A store as it was when first read, for one report (`sweep status`, `sweep plan`, a live display's
    refresh): the run list, each run's run.json, status and summary.json are read at most once, so a report
    costs one read of each file whatever it shows. Reads only: write through a Store, not a view."""

    def __init__(self, root: str | Path):
        super().__init__(root)
        self._memo: dict[tuple, Any] = {}

    def _once(self, key: tuple, read: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = (read(), None)
            except (OSError, ValueError) as e:
                self._memo[key] = (None, e)
        value, error = self._memo[key]
        if error is not None:
            raise error
        return value

    def run_ids(self) -> list[str]:
        return list(self._once(("ids",), super().run_ids))

    def records(self) -> dict[str, dict | None]:
        return self._once(("records",), super().records)

    def _read_record(self, run_id: str) -> Any:
        return self._once(("run.json", run_id), lambda: super(StoreView, self)._read_record(run_id))

    def status(self, run_id: str) -> dict:
        return self._once(("status", run_id), lambda: super(StoreView, self).status(run_id))

    def summary(self, run_id: str) -> dict | None:
        return self._once(("summary", run_id), lambda: super(StoreView, self).summary(run_id))

    def view(self) -> StoreView:
        return self


def schema_of(record: dict) -> int:
    """The identity schema a run.json was written under (none recorded: 0, before schemas existed)."""
    schema = record.get("schema", 0)
    return schema if isinstance(schema, int) and not isinstance(schema, bool) else 0


def id_forms(run_id: str, digest: str) -> list[str]:
    """run_id, then the same prefix with longer hash suffixes (for sha8 collisions)."""
    return [run_id if n == 8 else f"{run_id[:-8]}{digest[:n]}" for n in (8, 16, 64)]


def free_id(run_id: str, digest: str, taken) -> str:
    """The first of id_forms that is not `taken(name)`."""
    for candidate in id_forms(run_id, digest):
        if not taken(candidate):
            return candidate
    raise ConfigError(f"run id {run_id} and its longer forms are all taken by other runs")


__all__ = ["Store", "StoreView",
           "Health", "STATES", "FINISHED", "MIGRATION_JOURNAL", "SUPERSEDED", "checkpoint_steps", "free_id",
           "id_forms", "schema_of"]

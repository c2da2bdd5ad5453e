"""`scaling sweep migrate --store DIR`: re-key the runs a store holds under an older identity schema.

For every run whose run.json has an older schema (none recorded: schema 0, whose id hashed the full
config), scaling.identity.upgrade applies the schema steps to its stored config; the run gets the id that
today's expansion gives it ("<coords>-<sha8 of digest>"), its directory is renamed, its run.json (and its
config.json, where the config changed) rewritten, and every experiment manifest listing the old id updated.
Re-expanding the experiment afterwards finds the runs, so nothing finished is trained again.

- A run whose step carries notes (no config expresses the old run exactly, e.g. a validation set that
  depended on the batch size) keeps its finished results, marked in run.json ("migrated": "notes") and
  config.json ("_migration", which the analysis tables carry as a column); an unfinished one restarts
  from scratch, its partial files set aside in <run>/quarantine/migrate-schema-<N>/, so that no
  metrics.jsonl mixes two definitions.
- Runs that map to one identity are one run: the finished one keeps it (else the one already current,
  else the first by id); the others go to <store>/_superseded/<old id>/. A run whose config is not valid
  under today's code goes to <store>/_unmigrated/<old id>/. Each gets a set_aside.json saying why;
  nothing is ever deleted.

Crash safety: the whole plan, with the new content of every file it writes, goes to <store>/_migration.json
(atomically) before anything else is touched. Each step is then applied so that it can be applied again
(a directory already renamed or a file already set aside is recognised; a rewrite writes the journal's
content again), and the journal is removed last. A kill at any point leaves the journal, and a rerun
replays it to the end: no run is lost or duplicated. While the journal exists, workers stop claiming runs
and `sweep run` refuses the store. Live leases (running workers) make the command refuse before it writes
anything; it writes its journal, then checks leases again, as workers take a lease, then check the journal.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from scaling.api import IDENTITY_SCHEMA, Config, ConfigError, digest, from_dict, to_dict, upgrade, write_json_atomic
from sweeps import run_id as rid
from sweeps.lease import LEASE, is_stale, read_record
from sweeps.store import EXPERIMENTS, FINISHED, MIGRATION_JOURNAL, SUPERSEDED, Store, free_id, schema_of

UNMIGRATED = "_unmigrated"
RESET_FILES = ("summary.json", "metrics.jsonl", "ckpt", "config.json")  # what an unfinished run restarts without
JOURNAL_VERSION = 1


def _finished(store: Store, run_id: str) -> bool:
    state = store.status(run_id)["state"]
    return state in FINISHED and (store.summary(run_id) or {}).get("status") == state


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def live_leases(store: Store) -> list[tuple[str, dict]]:
    """(run id, lease record) of every run a live worker holds."""
    out = []
    for run_id in store.run_ids():
        path = store.run_dir(run_id) / LEASE
        if path.exists() and not is_stale(path):
            out.append((run_id, read_record(path) or {}))
    return out


def _refuse_if_leased(store: Store) -> None:
    live = live_leases(store)
    if live:
        run_id, lease = live[0]
        holder = f"{lease.get('owner', '?')} (host {lease.get('host', '?')}, pid {lease.get('pid', '?')})"
        raise ConfigError(f"store {store.root} is in use: {len(live)} runs are leased by running workers (run "
                          f"{run_id} by {holder}); stop its sweeps, or wait for their leases to expire "
                          f"({lease.get('ttl', '?')} s), then rerun `scaling sweep migrate --store {store.root}`")


# ---------------------------------------------------------------- the plan (reads only)


def plan(store: Store) -> dict | None:
    """The journal of the migration the store needs (None: every run is current). Writes nothing."""
    records = store.records()
    newer = sorted(r for r, rec in records.items() if rec is not None and schema_of(rec) > IDENTITY_SCHEMA)
    if newer:
        raise ConfigError(f"store {store.root}: run {newer[0]} has identity schema {schema_of(records[newer[0]])}, "
                          f"newer than this code's {IDENTITY_SCHEMA}; migrate it with the newer code")
    outdated = sorted(r for r, rec in records.items() if rec is not None and schema_of(rec) < IDENTITY_SCHEMA)
    if not outdated:
        return None
    now = time.time()
    entries, moves = [], []
    for old in outdated:
        rec = records[old]
        schema, stored = schema_of(rec), rec.get("config")
        try:
            if not isinstance(stored, dict):
                raise ConfigError(f"{store.run_dir(old) / 'run.json'} has no config")
            config, notes = upgrade(stored, schema)
            cfg = from_dict(Config, config)
            key = digest(cfg)
        except ConfigError as e:
            reason = f"its config is not valid under identity schema {IDENTITY_SCHEMA}: {e}"
            moves.append(_set_aside("invalid", old, schema, f"{UNMIGRATED}/{old}",
                                    {"reason": reason, "by": "scaling sweep migrate", "from_schema": schema}))
            continue
        entries.append({"old": old, "rec": rec, "schema": schema, "stored": stored, "cfg": cfg, "digest": key,
                        "notes": notes, "finished": _finished(store, old), "current": False})
    # one identity, one run: a current run with the same digest takes part in the choice
    current = store.digest_index()
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["digest"], []).append(e)
    taken = set(os.listdir(store.root))
    id_map: dict[str, str] = {}
    for key, group in groups.items():
        if key in current:
            group = group + [{"old": current[key], "current": True, "finished": _finished(store, current[key])}]
        group.sort(key=lambda e: (not e["finished"], not e["current"], e["old"]))
        winner = group[0]
        if winner["current"]:
            new = winner["old"]
        else:
            new = free_id(rid.run_id(winner["rec"].get("coords") or {}, key), key, lambda n: n in taken)
            taken.add(new)
            moves.append(_rekey(store, winner, new, now))
        for loser in group[1:]:
            reason = f"the same run as {new} (identity digest {key[:8]}), which is kept"
            moves.append(_set_aside("duplicate", loser["old"], loser.get("schema", IDENTITY_SCHEMA),
                                    f"{SUPERSEDED}/{loser['old']}",
                                    {"reason": reason, "by": "scaling sweep migrate", "kept": new}))
            id_map[loser["old"]] = new
        id_map[winner["old"]] = new
    dropped = {m["old"] for m in moves if m["kind"] == "invalid"}
    manifests = {}
    for name in store.experiments():
        manifest = store.manifest(name)
        runs = list(dict.fromkeys(id_map.get(r, r) for r in manifest.get("runs", []) if r not in dropped))
        if runs != manifest.get("runs"):
            manifests[name] = {**manifest, "runs": runs}
    moves.sort(key=lambda m: m["old"])
    skipped = sorted(r for r, rec in records.items() if rec is None)
    return {"version": JOURNAL_VERSION, "to_schema": IDENTITY_SCHEMA, "created": now, "moves": moves,
            "manifests": manifests, "skipped": skipped}


def _set_aside(kind: str, old: str, schema: int, dest: str, aside: dict) -> dict:
    """A move of the whole run directory out of the store's runs, with set_aside.json saying why."""
    return {"kind": kind, "old": old, "from_schema": schema, "dest": dest, "record": None, "config_json": None,
            "status": None, "quarantine": [], "notes": [], "aside": aside}


def _rekey(store: Store, e: dict, new: str, now: float) -> dict:
    old, cfg, notes, stored = e["old"], e["cfg"], e["notes"], e["stored"]
    resolved = to_dict(cfg)
    reset = bool(notes) and not e["finished"]
    migrated = {"from_schema": e["schema"], "from_id": old, "from_digest": e["rec"].get("digest"), "notes": notes,
                "restarted": reset}
    if stored != resolved:
        migrated["config"] = stored  # what run.json said before
    record = {**{k: v for k, v in e["rec"].items() if k not in ("id", "schema", "digest", "config", "migrated")},
              "id": new, "schema": IDENTITY_SCHEMA, "digest": e["digest"], "config": resolved, "migrated": migrated}
    d = store.run_dir(old)
    config_json = None
    existing = None if reset else _read_json(d / "config.json")
    if existing is not None:
        body = {k: v for k, v in existing.items() if not k.startswith("_")}
        if body != resolved or notes:
            config_json = {**resolved, **{k: v for k, v in existing.items() if k.startswith("_")},
                           "_migration": {"from_schema": e["schema"], "from_id": old, "notes": notes}}
    status = None
    quarantine: list[str] = []
    if reset:
        quarantine = [name for name in RESET_FILES if (d / name).exists()]
        status = {"state": "pending", "attempts": 0, "updated": now,
                  "migrated": f"restarted from scratch by `scaling sweep migrate` (schema {e['schema']} -> "
                              f"{IDENTITY_SCHEMA}: {'; '.join(n.split(':', 1)[0] for n in notes)})"}
    return {"kind": "rekey", "old": old, "from_schema": e["schema"], "new": new, "dest": new, "record": record,
            "config_json": config_json, "status": status, "quarantine": quarantine, "notes": notes, "aside": None,
            "finished": e["finished"]}


# ---------------------------------------------------------------- applying it (idempotent steps)


def apply(store: Store, journal: dict) -> None:
    """Apply every step of the journal; each step can be applied again after a crash."""
    root = store.root
    for move in journal["moves"]:
        src, dst = root / move["old"], root / move["dest"]
        if not src.is_dir():
            if dst.is_dir():
                continue  # renamed by an earlier, interrupted pass
            raise ConfigError(f"migration journal {root / MIGRATION_JOURNAL}: run {move['old']} is neither at {src} "
                              f"nor at {dst}")
        if move["quarantine"]:
            aside = src / "quarantine" / f"migrate-schema-{journal['to_schema']}"
            aside.mkdir(parents=True, exist_ok=True)
            for name in move["quarantine"]:
                if (src / name).exists() and not (aside / name).exists():
                    os.replace(src / name, aside / name)
        if move["status"] is not None:
            write_json_atomic(src / "status", move["status"])
        if move["config_json"] is not None and (src / "config.json").exists():
            write_json_atomic(src / "config.json", move["config_json"])
        if move["aside"] is not None:
            write_json_atomic(src / "set_aside.json", move["aside"])
        if move["record"] is not None:
            write_json_atomic(src / "run.json", move["record"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            raise ConfigError(f"cannot rename {src} to {dst}: {dst} exists")
        os.replace(src, dst)
    for name, manifest in journal["manifests"].items():
        write_json_atomic(root / EXPERIMENTS / f"{name}.json", manifest)


# ---------------------------------------------------------------- the command


def _report(store: Store, journal: dict, log: Callable[[str], None]) -> None:
    moves = journal["moves"]
    schemas = ", ".join(str(s) for s in sorted({m["from_schema"] for m in moves}))
    log(f"store {store.root}: {len(moves)} runs registered by older code (identity schema {schemas}) to re-key "
        f"under schema {journal['to_schema']}")
    for m in moves:
        if m["kind"] == "rekey":
            extra = f"  [notes: {', '.join(n.split(':', 1)[0] for n in m['notes'])}]" if m["notes"] else ""
            if m["quarantine"]:
                extra += f"  restarts from scratch (unfinished; partial files set aside in " \
                         f"{m['new']}/quarantine/migrate-schema-{journal['to_schema']}/)"
            log(f"  {m['old']} -> {m['new']}{extra}")
        else:
            log(f"  {m['old']} -> {m['dest']}/  ({m['aside']['reason']})")
    topics: dict[str, list[dict]] = {}
    for m in moves:
        for n in m["notes"]:
            topics.setdefault(n.split(":", 1)[0], []).append({"move": m, "note": n})
    for topic, items in topics.items():
        finished = sum(1 for i in items if i["move"].get("finished"))
        example = items[0]
        log(f"note, {topic}: {len(items)} runs ({finished} finished, kept as data and marked in run.json "
            f"\"migrated\" and config.json \"_migration\"; unfinished ones restart). {example['move']['old']}: "
            f"{example['note']}")
    for run_id in journal.get("skipped", []):
        log(f"  {run_id}: run.json is unreadable; left as it is")


def migrate(store_path: str | Path, log: Callable[[str], None] = print) -> dict:
    """Re-key every outdated run of the store (see the module docstring); returns the applied journal
    ({"moves": []} when there was nothing to do). Idempotent; finishes an interrupted migration."""
    store = Store(store_path)
    if not store.root.is_dir():
        raise ConfigError(f"--store {store_path}: no such directory")
    journal_path = store.root / MIGRATION_JOURNAL
    applied: list[dict] = []
    while True:
        if journal_path.exists():
            journal = _read_json(journal_path)
            if journal is None or journal.get("version") != JOURNAL_VERSION:
                raise ConfigError(f"{journal_path} is unreadable or of another version; it is the journal of an "
                                  "interrupted migration: restore it, or run this command with the code that wrote it")
            _refuse_if_leased(store)
            log(f"store {store.root}: finishing the interrupted migration of {journal_path}")
        else:
            journal = plan(store)
            if journal is None:
                break
            _refuse_if_leased(store)
            write_json_atomic(journal_path, journal)
            try:
                _refuse_if_leased(store)  # a worker that took a lease before it could see the journal
            except ConfigError:
                journal_path.unlink()
                raise
        _report(store, journal, log)
        apply(store, journal)
        journal_path.unlink()
        applied.append(journal)
    if not applied:
        log(f"store {store.root}: nothing to migrate (every run has identity schema {IDENTITY_SCHEMA}); "
            "nothing changed")
        return {"moves": [], "manifests": {}}
    moves = [m for j in applied for m in j["moves"]]
    manifests = sorted({n for j in applied for n in j["manifests"]})
    kinds = {k: sum(1 for m in moves if m["kind"] == k) for k in ("rekey", "duplicate", "invalid")}
    restarted = sum(1 for m in moves if m["status"] is not None)
    log(f"migrated {len(moves)} runs to identity schema {IDENTITY_SCHEMA}: {kinds['rekey']} re-keyed ({restarted} "
        f"restart from scratch), {kinds['duplicate']} duplicates set aside in {SUPERSEDED}/, {kinds['invalid']} no "
        f"longer valid set aside in {UNMIGRATED}/; manifests updated: {', '.join(manifests) or 'none'}")
    return {"moves": moves, "manifests": {n: m for j in applied for n, m in j["manifests"].items()}}


__all__ = ["migrate", "plan", "apply", "live_leases", "SUPERSEDED", "UNMIGRATED"]

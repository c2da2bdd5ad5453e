"""What a sweep is doing, read from the store alone: counts per state, tokens/s, the running runs.

Used by the local executor's live display and by `scaling sweep status`. Reading only the status
files, summaries and the last line of running runs' metrics, each once per refresh (Store.view), keeps a
refresh cheap. `sweep status`
also verifies the runs counted as finished (Store.damaged, cached by file size and mtime): a damaged
one is counted as damaged, not done, and listed with its paths, as are blocked runs and copies of one
run registered twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from scaling.api import ConfigError
from sweeps.store import STATES, Store


@dataclasses.dataclass
class Snapshot:
    t: float
    counts: dict[str, int]
    tokens: int  # trained so far: finished runs' summaries plus running runs' last logged row
    running: list[tuple[str, int, int, float | None]]  # (run id, step, steps, last train loss)
    damaged: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # verified runs whose files disagree


def last_row(path: Path, tail: int = 8192) -> dict | None:
    """The last complete JSON line of a file, reading only its tail."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
            if isinstance(row, dict):
                return row
        except ValueError:
            continue
    return None


def snapshot(store: Store, run_ids: list[str], verify: bool = False) -> Snapshot:
    """Counts per state from the status files; with verify, a run whose status says finished but whose
    files disagree counts as damaged instead."""
    store = store.view()  # each file read once per snapshot
    counts = {s: 0 for s in STATES}
    tokens, running = 0, []
    damaged = store.damaged(run_ids) if verify else {}
    for run_id in run_ids:
        status = store.status(run_id)
        state = status["state"]
        counts[state] += 1
        if state in ("done", "diverged"):
            tokens += int((store.summary(run_id) or {}).get("tokens") or 0)
        elif state in ("running", "pending", "failed"):
            row = last_row(store.run_dir(run_id) / "metrics.jsonl") or {}
            tokens += int(row.get("tokens") or 0)
            if state == "running":
                steps = store.run_record(run_id)["config"]["run"]["steps"]
                loss = row.get("train_loss")
                running.append((run_id, int(row.get("step") or 0), steps,
                                loss if isinstance(loss, (int, float)) else None))
    for run_id in damaged:
        counts[store.status(run_id)["state"]] -= 1
    return Snapshot(time.time(), counts, tokens, running, damaged)


def coordinate_columns(coords: list[dict], order: list[str] = (), reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """{coordinate key: column name} over the runs' coordinates, keys in `order` (the experiments' axes)
    first: the key's last part (model.width -> width) unless two keys share it or it is a `reserved`
    column name (param.kind and model.kind: the whole keys)."""
    present = {k for c in coords for k in c}
    keys = [k for k in dict.fromkeys([*order, *sorted(present)]) if k in present]
    last = Counter(k.rsplit(".", 1)[-1] for k in keys)
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    return {k: short[k] if last[short[k]] == 1 and short[k] not in reserved else k for k in keys}


def coordinates(store: Store, run_id: str) -> dict:
    """The run's swept coordinates from its run.json ({} when unreadable)."""
    try:
        coords = store.run_record(run_id).get("coords")
    except ConfigError:
        return {}
    return coords if isinstance(coords, dict) else {}


def problem_lines(store: Store, run_ids: list[str], snap: Snapshot) -> list[str]:
    """What a status report lists besides the counts: damaged runs (each problem names its file), runs that
    cannot start (blocked, with the reason) and copies of one run or half-registered directories."""
    store = store.view()
    lines = [f"damaged {run_id}: {'; '.join(problems)}" for run_id, problems in snap.damaged.items()]
    for run_id in run_ids:
        blocked = store.status(run_id).get("blocked")
        if blocked and store.status(run_id)["state"] == "pending":
            lines.append(f"cannot start {run_id}: {blocked}")
    for key, ids in store.duplicates().items():
        lines.append(f"duplicate: {', '.join(ids)} are one run (identity digest {key[:8]}); `scaling sweep run` "
                     f"keeps {ids[0]} and sets the others aside")
    lines += [f"orphan directory {store.run_dir(name)}: no run.json (ignored)" for name in store.orphans()]
    return lines


class Rate:
    """Tokens/s over a sliding window of snapshots."""

    def __init__(self, window_s: float = 30.0):
        self.window_s, self.points = window_s, []

    def update(self, snap: Snapshot) -> float:
        self.points.append((snap.t, snap.tokens))
        self.points = [p for p in self.points if snap.t - p[0] <= self.window_s] or self.points[-1:]
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return max(0.0, (n1 - n0) / (t1 - t0)) if t1 > t0 else 0.0


def counts_line(snap: Snapshot, rate: float | None = None) -> str:
    parts = [f"{s} {snap.counts[s]}" for s in STATES] + ([f"damaged {len(snap.damaged)}"] if snap.damaged else [])
    total = sum(snap.counts.values())
    text = f"{total} runs: " + ", ".join(parts)
    return text + (f" | {rate:,.0f} tokens/s" if rate is not None else "")


class Display:
    """A rich live table on a terminal; one plain line every `every_s` seconds otherwise."""

    def __init__(self, title: str, enabled: bool = True, every_s: float = 30.0):
        self.title, self.rate = title, Rate()
        self.live = None
        self.every_s, self._last_print = every_s, 0.0
        self.enabled = enabled
        if enabled and sys.stdout.isatty():
            from rich.live import Live  # noqa: PLC0415

            self.live = Live(refresh_per_second=2, transient=False)
            self.live.start()

    def update(self, snap: Snapshot) -> None:
        rate = self.rate.update(snap)
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self._table(snap, rate))
        elif snap.t - self._last_print >= self.every_s:
            self._last_print = snap.t
            print(f"[{self.title}] {counts_line(snap, rate)}", flush=True)

    def _table(self, snap: Snapshot, rate: float):
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"{self.title}: {counts_line(snap, rate)}", title_justify="left")
        for col in ("running run", "step", "train loss"):
            table.add_column(col)
        for run_id, step, steps, loss in snap.running:
            table.add_row(run_id, f"{step}/{steps}", f"{loss:.4f}" if loss is not None else "")
        return table

    def close(self, snap: Snapshot | None = None) -> None:
        if self.live is not None:
            self.live.stop()
        if snap is not None and self.enabled:
            print(f"[{self.title}] {counts_line(snap)}", flush=True)

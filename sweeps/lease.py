"""A lease on one run directory: at most one live worker trains a run at a time.

Protocol (local disks and shared filesystems, NFS included):
- acquire: write the lease record to a private temporary file and hard-link it to `<run>/lease`.
  link() fails if the name exists, so exactly one worker wins and the file never appears half-written.
  (Filesystems without hard links fall back to O_CREAT|O_EXCL.)
- heartbeat: a daemon thread touches the lease's mtime every ttl/4 seconds after checking the record
  is still its own. If another worker has taken the lease over, `lost` becomes True; the training
  loop polls it (train's should_stop), checkpoints and leaves the run to the new holder.
- expiry: a lease is stale when its mtime is older than its ttl (clocks of the hosts sharing a store
  must agree to well within the ttl), or at once when it names a process on this host that is gone.
- takeover: under a guard file `<run>/lease.takeover` (created with O_EXCL, so takeovers of one run
  are serialised), re-check that the lease is still stale and os.replace() it with our own record.
- release: remove the lease if it is still ours.
- fencing: every acquisition (takeover included) puts a fresh random token in the record. A holder calls
  `holds()` (the lease file still names its owner and token) before each write of the run's files, so a
  stalled worker whose lease was taken over stops writing at its next write, not at its next heartbeat.
The caller re-reads the run's status after acquiring: a peer may have finished it meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

LEASE, GUARD = "lease", "lease.takeover"
DEFAULT_TTL = 60.0


def new_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def read_record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written or corrupt: judged by its mtime alone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, now: float | None = None, default_ttl: float = DEFAULT_TTL) -> bool:
    """True when the lease at path exists and its holder is gone (dead process here, or no heartbeat)."""
    record = read_record(path)
    if record is None:
        return False
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
            and record["pid"] != os.getpid() and not _pid_alive(record["pid"]):
        return True
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > float(record.get("ttl", default_ttl))


def _write_private(path: Path, record: dict) -> Path:
    tmp = path.with_name(f".{path.name}.{record['owner']}.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _create_exclusive(path: Path, record: dict) -> bool:
    tmp = _write_private(path, record)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return True
    finally:
        tmp.unlink(missing_ok=True)


class Lease:
    def __init__(self, run_dir: Path, owner: str, ttl: float, previous: dict | None = None, token: str = ""):
        self.path = Path(run_dir) / LEASE
        self.owner, self.ttl, self.token = owner, ttl, token
        self.previous = previous  # the expired record this lease took over, if any
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, run_dir: str | Path, owner: str, ttl: float = DEFAULT_TTL) -> Lease | None:
        """The lease on run_dir, or None if a live worker holds it (or another is taking it over)."""
        run_dir = Path(run_dir)
        path = run_dir / LEASE
        record = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "ttl": ttl,
                  "acquired": time.time(), "token": uuid.uuid4().hex}
        if _create_exclusive(path, record):
            return cls(run_dir, owner, ttl, token=record["token"])._start()
        if not is_stale(path):
            return None
        return cls._take_over(run_dir, record)

    @classmethod
    def _take_over(cls, run_dir: Path, record: dict) -> Lease | None:
        path, guard = run_dir / LEASE, run_dir / GUARD
        if not _create_exclusive(guard, record):
            try:  # a taker that died inside the guard must not block the run forever
                if time.time() - guard.stat().st_mtime > record["ttl"]:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return None
        try:
            previous = read_record(path)
            if previous is None:  # released meanwhile: an ordinary acquisition
                return cls(run_dir, record["owner"], record["ttl"], token=record["token"])._start() \
                    if _create_exclusive(path, record) else None
            if not is_stale(path):
                return None
            os.replace(_write_private(path, record), path)
            return cls(run_dir, record["owner"], record["ttl"], previous=previous, token=record["token"])._start()
        finally:
            guard.unlink(missing_ok=True)

    def _start(self) -> Lease:
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat-{self.path.parent.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def still_mine(self) -> bool:
        record = read_record(self.path)
        return bool(record) and record.get("owner") == self.owner and record.get("token", "") == self.token

    def holds(self) -> bool:
        """The fencing check before a write: the lease file still holds this acquisition's owner and token."""
        if not self.lost and not self.still_mine():
            self.lost = True
        return not self.lost

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            if not self.still_mine():
                self.lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost = True
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost and self.still_mine():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

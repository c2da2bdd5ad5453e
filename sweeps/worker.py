"""A sweep worker: walk the experiment's runs in order, claim 1 to max_batch compatible runs, train them
together, record each outcome, repeat.

Every executor starts N copies of this loop on one store (Marin's race-to-claim workers):
- a run that is final (done or diverged with a consistent summary and metrics, or failed
  `max_attempts` times) is skipped; a run whose lease a live peer holds is left to it;
- for the first claimable run the worker leases up to `max_batch` runs with the same
  scaling.api.batch_key (one compiled program, differing only in scalar hyperparameters and seeds;
  max_batch is 1 unless batching is on), keeps those that resume from the same step and trains them with
  one call of scaling.api.train_runs. Each member keeps its own lease, status, events, files and outcome,
  so a run is the same whether a batch or a lone attempt finished it;
- a run's files are read (inspected) and repaired only under its lease, since a peer holding it may be
  setting files aside: after taking a lease the run is inspected (a peer may have finished it meanwhile),
  damaged files are set aside (Store.repair) and training resumes from the newest good checkpoint;
- an exception of training is recorded as status "failed" with its traceback (for every member of a
  batch, which is then retried alone); the run is retried by the next pass of any worker until it has
  failed `max_attempts` times. A diverged run is data: status "diverged";
- a ConfigError of training is the run's inputs or config, not the run (a data file that moved): the run
  is left pending with a "blocked" note naming the field, no attempt is spent, and a rerun once the input
  is back trains it;
- any other exception inside the worker is logged with the run id and the worker goes on with the other
  runs (after `max_attempts` of them on one run, it leaves that run alone);
- SIGTERM (preemption) sets `stop`: the current runs checkpoint (train_runs' should_stop), go back to
  "pending", and the worker exits with EXIT_REQUEUE (75, EX_TEMPFAIL) so a requeue knows to restart it,
  or with 0 when nothing is left to do. `python -m sweeps.worker` takes the signal as a stop from its
  first line on, also while it is still importing JAX;
- when no run is claimable but peers still hold leases, the worker waits and polls, so that a peer that
  dies is taken over once its lease expires (or at once if its process is visibly gone on this host);
  every takeover is logged in the run's events.jsonl. A worker whose lease was taken over while it was
  stalled writes nothing more of the run: training asks the lease (its fencing token) before every write
  of metrics, checkpoints and summary (train_runs' may_write), and the worker before recording an outcome.
The loop ends with 0 when every run of the experiment is final, 1 when some failed for good or cannot
start; an exception escaping the loop exits with EXIT_CRASHED (70), which the local executor restarts.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)) if s is not None)


def install_stop_signals(stop: threading.Event) -> None:
    def handler(signum, frame):  # noqa: ARG001
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


# `python -m sweeps.worker`: the imports below start JAX (seconds on a loaded machine); a stop signal
# meanwhile must stop the worker (0 when nothing is left to do), not kill it
STARTUP_STOP = threading.Event()
if __name__ == "__main__":
    install_stop_signals(STARTUP_STOP)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from scaling.api import ConfigError  # noqa: E402
from sweeps.lease import DEFAULT_TTL, Lease, new_owner_id  # noqa: E402
from sweeps.store import DEFAULT_MAX_ATTEMPTS, FINISHED, Health, Store  # noqa: E402

EXIT_DONE, EXIT_FAILED, EXIT_CRASHED, EXIT_REQUEUE = 0, 1, 70, 75  # 70: EX_SOFTWARE, 75: EX_TEMPFAIL


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease_ttl: float = DEFAULT_TTL
    poll_s: float = 2.0  # wait between passes while peers hold the remaining runs
    batch: str = "off"  # on | off | auto (= on when JAX's backend is an accelerator): train runs that differ
    # only in scalar hyperparameters together in one vmapped program, up to max_batch at a time
    max_batch: int = 16
    jax_cache: str | None = "store"  # persistent compilation cache: "store" -> <store>/_cache/jax, None: off


def needs_repair(h: Health) -> bool:
    """Damage that train() would not handle by itself: a summary or final status next to inconsistent
    files, or metrics.jsonl damaged before the newest checkpoint (train only drops rows after it)."""
    if not h.problems:
        return False
    return h.summary is not None or h.state in FINISHED or any(c > h.safe_step for c in h.checkpoints)


class Worker:
    def __init__(self, store: Store | str | Path, run_ids: list[str], options: WorkerOptions = WorkerOptions(),
                 owner: str | None = None, stop: threading.Event | None = None,
                 log: Callable[[str], None] | None = None, max_batch: int = 1, track: dict | None = None,
                 experiment: str = ""):
        """max_batch: how many compatible runs one attempt trains together (run_worker sets it from
        options.batch and options.max_batch). track: the manifest's tracker choice ({"kinds", "project",
        "dir"}, `sweep run --track`), each run's tracker tagged with the experiment and its coordinates."""
        self.store = store if isinstance(store, Store) else Store(store)
        self.run_ids = list(run_ids)
        self.options = options
        self.owner = owner or new_owner_id()
        self.stop = stop or threading.Event()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.max_batch = max(1, max_batch)
        self.track, self.experiment = track or {}, experiment
        self._final: set[str] = set()  # verified final under their lease by this worker: not inspected again
        self._keys: dict[str, tuple | None] = {}
        self._solo: set[str] = set()  # runs whose batched attempt failed: retried one at a time
        self._blocked: dict[str, str] = {}  # run id -> why it cannot start (its inputs, its config, this worker)
        self._superseded: set[str] = set()  # set aside as copies of another run (Store.merge_duplicates)
        self._errors: Counter = Counter()  # unexpected exceptions of this worker, per run

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        while True:
            progressed, busy = False, False
            seen: set[str] = set()
            for run_id in self.run_ids:  # a run set aside as a copy appends the kept one
                if self.stop.is_set():
                    return self.exit_code()
                if run_id in seen or run_id in self._blocked:
                    continue
                outcomes = self.attempt(run_id, seen)
                seen |= set(outcomes)
                busy |= "busy" in outcomes.values()
                progressed |= any(o not in ("skip", "busy", "blocked") for o in outcomes.values())
                if "preempted" in outcomes.values():
                    return EXIT_REQUEUE
            if self.stop.is_set() or (not progressed and not busy):
                return self.exit_code()
            if not progressed:
                self.stop.wait(self.options.poll_s)

    def attempt(self, run_id: str, seen: set[str]) -> dict[str, str]:
        """try_runs on run_id and its batch candidates. An unexpected exception is logged with the run id and
        the worker goes on; after max_attempts of them this worker leaves the run alone (blocked)."""
        try:
            return self.try_runs(self.candidates(run_id, seen))
        except Exception as e:  # noqa: BLE001 - one run's trouble must not stop the others
            self._errors[run_id] += 1
            n, limit = self._errors[run_id], self.options.max_attempts
            self.log(f"run {run_id}: unexpected error in the worker ({n}/{limit}): {type(e).__name__}: {e}\n"
                     + "".join(traceback.format_exception(e)))
            if n >= limit:
                self._blocked[run_id] = f"this worker failed on it {n} times ({type(e).__name__}: {e})"
            return {run_id: "error"}

    def exit_code(self) -> int:
        """EXIT_REQUEUE while some run is left to do; else EXIT_FAILED if some run failed for good or cannot
        start (blocked: each was logged with its reason); else EXIT_DONE."""
        left = [r for r in self.run_ids if not self.settled(r)]
        blocked = [r for r in left if r in self._blocked]
        if len(blocked) < len(left):
            return EXIT_REQUEUE
        if blocked:
            self.log(f"{len(blocked)} of {len(self.run_ids)} runs cannot start, left pending (no attempt spent); "
                     f"fix and rerun the sweep: " + "; ".join(f"{r}: {self._blocked[r]}" for r in blocked))
            return EXIT_FAILED
        failed = any(self.store.status(r)["state"] == "failed" for r in self.run_ids if r not in self._superseded)
        return EXIT_FAILED if failed else EXIT_DONE

    def settled(self, run_id: str) -> bool:
        """Nothing left to do on run_id: verified final (now, under its lease, if not yet), or set aside as a
        copy. A run whose lease a peer holds (verifying or merging it) is judged by its status file."""
        if run_id in self._final or run_id in self._superseded or self.superseded(run_id):
            return True
        if run_id in self._blocked or not self.looks_final(run_id):
            return False
        verdict = self.verify(run_id)
        return True if verdict is None else verdict

    def acquire(self, run_id: str) -> Lease | None:
        """The run's lease (None: a live peer holds it). Taking over a dead or silent holder's lease is
        logged at once, whatever the run turns out to need."""
        lease = Lease.acquire(self.store.run_dir(run_id), self.owner, self.options.lease_ttl)
        if lease is not None and lease.previous is not None:
            previous = lease.previous.get("owner")
            self.store.event(run_id, "takeover", worker=self.owner, previous=previous)
            self.log(f"run {run_id}: took over the lease of {previous}")
        return lease

    def verify(self, run_id: str) -> bool | None:
        """Whether run_id is final, inspected under its lease (None: a peer holds the lease)."""
        try:
            lease = self.acquire(run_id)
        except FileNotFoundError:
            return None
        if lease is None:
            return None
        with lease:
            final = self.store.inspect(run_id).final(self.options.max_attempts)
        if final:
            self._final.add(run_id)
        return final

    def looks_final(self, run_id: str) -> bool:
        """What the status file alone says (no lease needed): final, to be verified under the lease."""
        status = self.store.status(run_id)
        failed_for_good = status["state"] == "failed" and int(status.get("attempts") or 0) >= self.options.max_attempts
        return status["state"] in FINISHED or failed_for_good

    def superseded(self, run_id: str) -> bool:
        """True if run_id was set aside as a copy of another run; the kept run joins this worker's runs."""
        if run_id in self._superseded:
            return True
        kept = None if self.store.run_dir(run_id).is_dir() else self.store.superseded_by(run_id)
        if kept is None:
            return False
        self._superseded.add(run_id)
        self.log(f"run {run_id} was set aside as a copy of {kept}: {kept} instead")
        if kept not in self.run_ids:
            self.run_ids.append(kept)
        return True

    def key(self, run_id: str) -> tuple | None:
        """The run's batch_key (None: its config does not load; it is tried alone and blocked)."""
        from scaling.api import batch_key  # noqa: PLC0415 - jax starts only in processes that train

        if run_id not in self._keys:
            try:
                self._keys[run_id] = batch_key(self.store.config(run_id))
            except ConfigError:
                self._keys[run_id] = None
        return self._keys[run_id]

    def candidates(self, first: str, seen: set[str]) -> list[str]:
        """first, then up to max_batch - 1 later runs of the same batch_key whose status is not final."""
        if self.max_batch == 1 or first in self._solo or first in self._final or self.key(first) is None:
            return [first]
        group = [first]
        for run_id in self.run_ids:
            if len(group) >= self.max_batch:
                break
            if run_id in seen or run_id == first or run_id in self._solo or run_id in self._final \
                    or run_id in self._blocked or run_id in self._superseded or self.looks_final(run_id):
                continue
            if self.key(run_id) == self.key(first):
                group.append(run_id)
        return group

    # ------------------------------------------------------------ one attempt

    def migration_stop(self, run_id: str) -> bool:
        """True (and the worker stops) when a migration is re-keying the store or the run's directory has
        moved: called before and after taking a lease. sweeps.migrate writes its journal and then checks
        the leases, a worker takes a lease and then checks the journal, so the two never overlap on a run."""
        if not self.store.migrating() and self.store.run_dir(run_id).is_dir():
            return False
        if not self.stop.is_set():
            self.log(f"store {self.store.root}: a migration is under way or run {run_id} has moved; stopping "
                     "(rerun the sweep once `scaling sweep migrate` has finished)")
        self.stop.set()
        return True

    def claim(self, run_id: str) -> tuple[str, Lease | None]:
        """(outcome, lease): "claimed" with the lease held, else skip (final, set aside or migrating) | busy.
        The run is inspected only under its lease: a peer holding it may be setting its files aside."""
        if run_id in self._final or self.superseded(run_id) or self.migration_stop(run_id):
            return "skip", None
        try:
            lease = self.acquire(run_id)
        except FileNotFoundError:  # its directory moved meanwhile (a merge or a migration)
            return "skip" if self.superseded(run_id) or self.migration_stop(run_id) else "busy", None
        if lease is None:
            return "busy", None
        try:
            if self.migration_stop(run_id):
                lease.release()
                return "skip", None
            if self.store.inspect(run_id).final(self.options.max_attempts):  # a peer may have finished it
                self._final.add(run_id)
                lease.release()
                return "skip", None
        except BaseException:
            lease.release()
            raise
        return "claimed", lease

    def try_runs(self, run_ids: list[str]) -> dict[str, str]:
        """Claim what can be claimed and train it in one attempt. Outcome per run: skip | busy | done |
        diverged | failed | preempted | lost."""
        outcomes: dict[str, str] = {}
        leases: dict[str, Lease] = {}
        try:
            for run_id in run_ids:
                outcome, lease = self.claim(run_id)
                if lease is None:
                    outcomes[run_id] = outcome
                else:
                    leases[run_id] = lease
            if len(leases) > 1:  # members must resume from the same step: keep the commonest, the rest wait
                steps = {r: max(self.store.inspect(r).checkpoints, default=0) for r in leases}
                common_step = Counter(steps.values()).most_common(1)[0][0]
                for r in [r for r in leases if steps[r] != common_step]:
                    leases.pop(r).release()
            if leases:
                outcomes.update(self.train(list(leases), leases))
            return outcomes
        finally:
            for lease in leases.values():
                lease.release()

    def train(self, members: list[str], leases: dict[str, Lease]) -> dict[str, str]:
        # jax starts only in processes that train
        from scaling.api import MembersOutOfStep, OwnershipLost, train_runs  # noqa: PLC0415

        extra = {"batch": len(members)} if len(members) > 1 else {}
        commons = {r: self.prepare(r, leases[r], self.store.inspect(r), **extra) for r in members}
        try:
            cfgs = [self.store.config(r) for r in members]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    summaries = train_runs(cfgs, [self.store.run_dir(r) for r in members],
                                           should_stop=lambda: self.stop.is_set() or any(
                                               lease.lost for lease in leases.values()),
                                           may_write=lambda i: leases[members[i]].holds(),  # fencing
                                           tracking=[self.tracking(r) for r in members])
                finally:  # also when training raised: a set-aside checkpoint must reach the log
                    self.report_warnings(members, caught)
        except MembersOutOfStep as e:  # a checkpoint turned out unreadable: one at a time, nothing written
            self.log(f"batch of {len(members)}: {e}")
            self._solo |= set(members)
            return {r: self.train([r], leases)[r] for r in members}
        except OwnershipLost as e:  # a peer took a member over while this worker was stalled: its files are
            self.log(str(e))  # the peer's now; the other members of a batch go on alone
            if len(members) == 1:
                return {members[0]: self.record_lost(members[0])}
            self._solo |= set(members)
            return {r: self.record_lost(r) if not leases[r].holds() else self.train([r], leases)[r] for r in members}
        except ConfigError as e:  # the inputs or the config, raised before training wrote anything: no attempt
            if len(members) > 1:  # spent; a batch's members are tried alone (one may be fine)
                self._solo |= set(members)
                return {r: self.train([r], leases)[r] for r in members}
            return {r: self.record_lost(r) if not leases[r].holds() else self.record_blocked(r, commons[r], e)
                    for r in members}
        except Exception as e:  # noqa: BLE001 - any failure is recorded, never hidden; a batch's members retry alone
            if len(members) > 1:
                self._solo |= set(members)
            return {r: self.record_lost(r) if not leases[r].holds() else self.record_failure(r, commons[r], e)
                    for r in members}
        return {r: self.record(r, leases[r], commons[r], s) for r, s in zip(members, summaries)}

    def tracking(self, run_id: str):
        """The run's tracker mirrors (scaling.api.Tracking), None when the sweep has none: one tracker run
        per run id, tagged with the sweep's name and the run's coordinates."""
        from scaling.api import Tracking  # noqa: PLC0415

        if not self.track.get("kinds"):
            return None
        coords = self.store.run_record(run_id).get("coords") or {}
        context = {"sweep": self.experiment, "run_id": run_id, **{f"coord/{k}": v for k, v in coords.items()}}
        tags = (f"sweep:{self.experiment}", *(f"{k}={v}" for k, v in sorted(coords.items())))
        return Tracking(tuple(self.track["kinds"]), project=self.track.get("project") or self.experiment or "scaling",
                        dir=self.track.get("dir"), run_id=run_id, tags=tags, context=context)

    def prepare(self, run_id: str, lease: Lease, health: Health, **start_fields) -> dict:
        """Under the lease: repair damage, mark the run running. Returns the status fields every later
        record of this attempt repeats."""
        store = self.store
        if needs_repair(health):
            report = store.repair(run_id, health)
            store.event(run_id, "repair", worker=self.owner, **report)
            self.log(f"run {run_id}: {'; '.join(health.problems)} -> resuming from step {report['resume_from']}"
                     f" (set aside: {', '.join(report['moved']) or 'nothing'})")
        from_step = max(store.inspect(run_id).checkpoints, default=0)
        common = {"worker": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                  "attempts": health.attempts}
        store.write_status(run_id, "running", **common, started=time.time(), from_step=from_step, **start_fields)
        store.event(run_id, "start", worker=self.owner, from_step=from_step, **start_fields)
        return common

    def report_warnings(self, run_ids: list[str], caught: list) -> None:
        for w in caught:
            for run_id in run_ids if len(run_ids) == 1 else [r for r in run_ids if r in str(w.message)] or run_ids:
                self.log(f"run {run_id}: {w.message}")
                self.store.event(run_id, "warning", worker=self.owner, message=str(w.message))

    def record_failure(self, run_id: str, common: dict, error: BaseException) -> str:
        text = f"{type(error).__name__}: {error}"
        attempts = common["attempts"] + 1
        self.store.write_status(run_id, "failed", **{**common, "attempts": attempts}, error=text,
                                traceback="".join(traceback.format_exception(error)))
        self.store.event(run_id, "failed", worker=self.owner, error=text)
        self.log(f"run {run_id}: failed (attempt {attempts}/{self.options.max_attempts}): {text}")
        return "failed"

    def record_lost(self, run_id: str, **fields) -> str:
        """Only the audit line: the status and every other file of the run are its new holder's."""
        self.store.event(run_id, "lost", worker=self.owner, **fields)
        self.log(f"run {run_id}: its lease was taken over by a peer; left to it")
        return "lost"

    def record_blocked(self, run_id: str, common: dict, error: ConfigError) -> str:
        """Back to pending, the attempt not counted: the run cannot start until its input or config is fixed."""
        text = str(error)
        self.store.write_status(run_id, "pending", **common, blocked=text)
        self.store.event(run_id, "blocked", worker=self.owner, error=text)
        self.log(f"run {run_id}: cannot start: {text}; left pending (no attempt spent): fix it and rerun the sweep")
        self._blocked[run_id] = text
        return "blocked"

    def record(self, run_id: str, lease: Lease, common: dict, summary: dict) -> str:
        """The outcome of an attempt that returned: done | diverged | preempted (back to pending) | lost."""
        store = self.store
        if not lease.holds():  # a peer took the run over while this worker was stalled: leave it to the peer
            return self.record_lost(run_id, steps=summary.get("steps"))
        state = summary["status"]
        if state == "preempted":
            store.write_status(run_id, "pending", **common, preempted_at=summary["steps"])
            store.event(run_id, "preempted", worker=self.owner, steps=summary["steps"])
            return "preempted"
        store.write_status(run_id, state, **common, steps=summary.get("steps"),
                           final_val_loss=summary.get("final_val_loss"))
        store.event(run_id, "finish", worker=self.owner, state=state, steps=summary.get("steps"))
        self._final.add(run_id)
        return state


def sweep_outcome(store: Store, run_ids: list[str], max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> tuple[int, str]:
    """(exit status, a line saying why) of a sweep from the store's state once its workers have exited:
    EXIT_REQUEUE while some run is left to do (or held by another sweep's live workers), else EXIT_FAILED
    when some run failed for good or cannot start (blocked), else EXIT_DONE. Executors return this rather
    than their workers' exit codes: a worker may have crashed after its runs were all done."""
    tally: dict[str, list[str]] = {k: [] for k in ("finished", "failed", "blocked", "left", "held")}
    blocked_why = ""
    for run_id in run_ids:
        if not store.run_dir(run_id).is_dir() and store.superseded_by(run_id):
            continue  # a copy set aside; the kept run is counted under its own id
        if store.leased(run_id):
            tally["held"].append(run_id)
            continue
        health, status = store.inspect(run_id), store.status(run_id)
        if health.finished():
            tally["finished"].append(run_id)
        elif health.state == "failed" and health.attempts >= max_attempts:
            tally["failed"].append(run_id)
        elif status.get("blocked"):
            tally["blocked"].append(run_id)
            blocked_why = blocked_why or f" (first: {run_id}: {status['blocked']})"
        else:
            tally["left"].append(run_id)
    n = {k: len(v) for k, v in tally.items()}
    line = (f"{sum(n.values())} runs: {n['finished']} done or diverged, {n['failed']} failed after {max_attempts} "
            f"attempts, {n['blocked']} cannot start{blocked_why}, {n['left']} left to do, {n['held']} held by other "
            "live workers")
    if n["left"] or n["held"]:
        return EXIT_REQUEUE, line + " -> exit 75: rerun the same command to resume"
    if n["failed"] or n["blocked"]:
        return EXIT_FAILED, line + " -> exit 1"
    return EXIT_DONE, line + " -> exit 0"


# ---------------------------------------------------------------- process entry point


def configure_process(cpus: list[int] | None, jax_cache: str | None) -> None:
    """Before any JAX computation: pin to `cpus` (XLA's CPU client sizes its thread pool from the
    affinity mask; XLA_FLAGS such as --xla_cpu_multi_thread_eigen=false do not limit it in jax 0.10)
    and enable the persistent compilation cache (restarted workers reuse their peers' compilations)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    if jax_cache:
        import jax  # noqa: PLC0415

        Path(jax_cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(jax_cache))
        # every compilation, however small: JAX's default skips those under 1 s, which on CPU is most of a
        # sweep's (a tiny model's train step compiles in 0.2-0.5 s; benchmarks/README.md, "Compilation")
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def jax_cache_dir(store: Store, option: str | None) -> str | None:
    if option in (None, "", "none", "off"):
        return None
    return str(store.root / "_cache" / "jax") if option == "store" else option


def run_worker(store_path: str | Path, experiment: str, options: WorkerOptions = WorkerOptions(),
               cpus: list[int] | None = None, stop: threading.Event | None = None, owner: str | None = None) -> int:
    """What every executor calls: configure the process, then claim and train until the experiment is done."""
    store = Store(store_path)
    manifest = store.manifest(experiment)
    run_ids = manifest["runs"]
    configure_process(cpus, jax_cache_dir(store, options.jax_cache))
    batched = options.batch == "on" or (options.batch == "auto" and _on_accelerator())
    return Worker(store, run_ids, options, owner=owner, stop=stop, max_batch=options.max_batch if batched else 1,
                  track=manifest.get("track"), experiment=experiment).run()


def _on_accelerator() -> bool:
    import jax  # noqa: PLC0415

    return jax.default_backend() != "cpu"


def parse_cpus(text: str | None) -> list[int] | None:
    return [int(c) for c in text.split(",") if c] if text else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.worker", description="one sweep worker")
    p.add_argument("--store", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--cpus", help="comma-separated CPU ids to pin this process to")
    p.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    p.add_argument("--lease-ttl", type=float, default=DEFAULT_TTL)
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--batch", choices=("off", "on", "auto"), default="off")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--jax-cache", default="store", help="'store' (<store>/_cache/jax), a directory, or 'none'")
    args = p.parse_args(argv)
    stop = STARTUP_STOP if __name__ == "__main__" else threading.Event()
    install_stop_signals(stop)
    options = WorkerOptions(max_attempts=args.max_attempts, lease_ttl=args.lease_ttl, poll_s=args.poll,
                            batch=args.batch, max_batch=args.max_batch, jax_cache=args.jax_cache)
    try:
        return run_worker(args.store, args.experiment, options, cpus=parse_cpus(args.cpus), stop=stop)
    except ConfigError as e:  # the store or the experiment's manifest: a restart would not help
        print(f"worker: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except Exception:  # noqa: BLE001 - a crash, not a failed run: executors restart the worker
        traceback.print_exc()
        return EXIT_CRASHED


if __name__ == "__main__":
    sys.exit(main())

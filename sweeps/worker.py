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
- after taking a lease the run is inspected again (a peer may have finished it meanwhile), damaged
  files are set aside (Store.repair) and training resumes from the newest good checkpoint;
- an exception is recorded as status "failed" with its traceback (for every member of a batch, which is
  then retried alone); the run is retried by the next pass of any worker until it has failed
  `max_attempts` times. A diverged run is data: status "diverged";
- SIGTERM (preemption) sets `stop`: the current runs checkpoint (train_runs' should_stop), go back to
  "pending", and the worker exits with EXIT_REQUEUE (75, EX_TEMPFAIL) so a requeue knows to restart it;
- when no run is claimable but peers still hold leases, the worker waits and polls, so that a peer that
  dies is taken over once its lease expires (or at once if its process is visibly gone on this host).
The loop ends with 0 when every run of the experiment is final.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

from sweeps.lease import DEFAULT_TTL, Lease, new_owner_id
from sweeps.store import DEFAULT_MAX_ATTEMPTS, FINISHED, Health, Store

EXIT_DONE, EXIT_FAILED, EXIT_REQUEUE = 0, 1, 75


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
                 log: Callable[[str], None] | None = None, max_batch: int = 1):
        """max_batch: how many compatible runs one attempt trains together (run_worker sets it from
        options.batch and options.max_batch)."""
        self.store = store if isinstance(store, Store) else Store(store)
        self.run_ids = list(run_ids)
        self.options = options
        self.owner = owner or new_owner_id()
        self.stop = stop or threading.Event()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.max_batch = max(1, max_batch)
        self._final: set[str] = set()  # verified final by this worker: not inspected again
        self._keys: dict[str, tuple] = {}
        self._solo: set[str] = set()  # runs whose batched attempt failed: retried one at a time

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        while True:
            progressed, busy = False, False
            seen: set[str] = set()
            for run_id in self.run_ids:
                if self.stop.is_set():
                    return self.exit_code()
                if run_id in seen:
                    continue
                outcomes = self.try_runs(self.candidates(run_id, seen))
                seen |= set(outcomes)
                busy |= "busy" in outcomes.values()
                progressed |= any(o not in ("skip", "busy") for o in outcomes.values())
                if "preempted" in outcomes.values():
                    return EXIT_REQUEUE
            if self.stop.is_set() or (not progressed and not busy):
                return self.exit_code()
            if not progressed:
                self.stop.wait(self.options.poll_s)

    def exit_code(self) -> int:
        """EXIT_REQUEUE while some run is not final; else EXIT_FAILED if some run failed for good."""
        if not all(self.is_final(r) for r in self.run_ids):
            return EXIT_REQUEUE
        failed = any(self.store.status(r)["state"] == "failed" for r in self.run_ids)
        return EXIT_FAILED if failed else EXIT_DONE

    def is_final(self, run_id: str) -> bool:
        if run_id in self._final:
            return True
        if self.store.inspect(run_id).final(self.options.max_attempts):
            self._final.add(run_id)
            return True
        return False

    def key(self, run_id: str) -> tuple:
        from scaling.api import batch_key  # noqa: PLC0415 - jax starts only in processes that train

        if run_id not in self._keys:
            self._keys[run_id] = batch_key(self.store.config(run_id))
        return self._keys[run_id]

    def candidates(self, first: str, seen: set[str]) -> list[str]:
        """first, then up to max_batch - 1 later runs of the same batch_key that are not final."""
        if self.max_batch == 1 or first in self._solo or self.is_final(first):
            return [first]
        group = [first]
        for run_id in self.run_ids:
            if len(group) >= self.max_batch:
                break
            if run_id in seen or run_id == first or run_id in self._solo or self.is_final(run_id):
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
        """(outcome, lease): "claimed" with the lease held, else skip (final or migrating) | busy."""
        if self.is_final(run_id) or self.migration_stop(run_id):
            return "skip", None
        lease = Lease.acquire(self.store.run_dir(run_id), self.owner, self.options.lease_ttl)
        if lease is None:
            return "busy", None
        if self.migration_stop(run_id):
            lease.release()
            return "skip", None
        if self.store.inspect(run_id).final(self.options.max_attempts):  # re-checked under the lease: a peer
            self._final.add(run_id)                                      # may have finished it meanwhile
            lease.release()
            return "skip", None
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
        from scaling.api import MembersOutOfStep, train_runs  # noqa: PLC0415 - jax starts only in processes that train

        extra = {"batch": len(members)} if len(members) > 1 else {}
        commons = {r: self.prepare(r, leases[r], self.store.inspect(r), **extra) for r in members}
        try:
            cfgs = [self.store.config(r) for r in members]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                summaries = train_runs(cfgs, [self.store.run_dir(r) for r in members],
                                       should_stop=lambda: self.stop.is_set() or any(
                                           lease.lost for lease in leases.values()))
            self.report_warnings(members, caught)
        except MembersOutOfStep as e:  # a checkpoint turned out unreadable: one at a time, nothing written
            self.log(f"batch of {len(members)}: {e}")
            self._solo |= set(members)
            return {r: self.train([r], leases)[r] for r in members}
        except Exception as e:  # noqa: BLE001 - any failure is recorded, never hidden; a batch's members retry alone
            if len(members) > 1:
                self._solo |= set(members)
            return {r: "lost" if leases[r].lost else self.record_failure(r, commons[r], e) for r in members}
        return {r: self.record(r, leases[r], commons[r], s) for r, s in zip(members, summaries)}

    def prepare(self, run_id: str, lease: Lease, health: Health, **start_fields) -> dict:
        """Under the lease: note a takeover, repair damage, mark the run running. Returns the status
        fields every later record of this attempt repeats."""
        store = self.store
        if lease.previous is not None:
            store.event(run_id, "takeover", worker=self.owner, previous=lease.previous.get("owner"))
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

    def record(self, run_id: str, lease: Lease, common: dict, summary: dict) -> str:
        """The outcome of an attempt that returned: done | diverged | preempted (back to pending) | lost."""
        store = self.store
        if lease.lost:  # a peer took the run over while this worker was stalled: leave it to the peer
            store.event(run_id, "lost", worker=self.owner, steps=summary.get("steps"))
            return "lost"
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
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def install_stop_signals(stop: threading.Event) -> None:
    def handler(signum, frame):  # noqa: ARG001
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)):
        if sig is not None:
            signal.signal(sig, handler)


def jax_cache_dir(store: Store, option: str | None) -> str | None:
    if option in (None, "", "none", "off"):
        return None
    return str(store.root / "_cache" / "jax") if option == "store" else option


def run_worker(store_path: str | Path, experiment: str, options: WorkerOptions = WorkerOptions(),
               cpus: list[int] | None = None, stop: threading.Event | None = None, owner: str | None = None) -> int:
    """What every executor calls: configure the process, then claim and train until the experiment is done."""
    store = Store(store_path)
    run_ids = store.manifest(experiment)["runs"]
    configure_process(cpus, jax_cache_dir(store, options.jax_cache))
    batched = options.batch == "on" or (options.batch == "auto" and _on_accelerator())
    return Worker(store, run_ids, options, owner=owner, stop=stop, max_batch=options.max_batch if batched else 1).run()


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
    stop = threading.Event()
    install_stop_signals(stop)
    options = WorkerOptions(max_attempts=args.max_attempts, lease_ttl=args.lease_ttl, poll_s=args.poll,
                            batch=args.batch, max_batch=args.max_batch, jax_cache=args.jax_cache)
    return run_worker(args.store, args.experiment, options, cpus=parse_cpus(args.cpus), stop=stop)


if __name__ == "__main__":
    sys.exit(main())

"""A worker that trains compatible runs together in one vmapped program (scaling.batched).

Runs are compatible when they share scaling.batched.batch_key: same compiled step and loop, differing
only in scalar hyperparameters and seeds. The worker walks the runs in order; for the first claimable
run it leases up to `max_batch` compatible claimable runs, keeps those that resume from the same step,
and trains them as one batch. Each member keeps its own lease, status, events, files and outcome, so
the store protocol is unchanged: a batch member can be finished alone by a plain worker and vice versa.
If a batched attempt raises, its members are recorded as failed and retried one at a time.
"""

from __future__ import annotations

import warnings
from collections import Counter

from sweeps.lease import Lease
from sweeps.worker import EXIT_REQUEUE, Worker


class BatchingWorker(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._keys: dict[str, tuple] = {}
        self._solo: set[str] = set()  # runs whose batched attempt failed: retried one at a time

    def key(self, run_id: str) -> tuple:
        from scaling.api import batch_key  # noqa: PLC0415

        if run_id not in self._keys:
            self._keys[run_id] = batch_key(self.store.config(run_id))
        return self._keys[run_id]

    def run(self) -> int:
        while True:
            progressed, busy = False, False
            done_this_pass: set[str] = set()
            for run_id in self.run_ids:
                if self.stop.is_set():
                    return self.exit_code()
                if run_id in done_this_pass:
                    continue
                group = self._candidates(run_id, done_this_pass)
                outcomes = self.try_batch(group) if len(group) > 1 else {run_id: self.try_run(run_id)}
                done_this_pass |= set(outcomes)
                busy |= "busy" in outcomes.values()
                progressed |= any(o not in ("skip", "busy") for o in outcomes.values())
                if "preempted" in outcomes.values():
                    return EXIT_REQUEUE
            if self.stop.is_set() or (not progressed and not busy):
                return self.exit_code()
            if not progressed:
                self.stop.wait(self.options.poll_s)

    def _candidates(self, first: str, seen: set[str]) -> list[str]:
        if first in self._solo or self.is_final(first):
            return [first]
        key = self.key(first)
        group = [first]
        for run_id in self.run_ids:
            if len(group) >= self.options.max_batch:
                break
            if run_id in seen or run_id == first or run_id in self._solo or self.is_final(run_id):
                continue
            if self.key(run_id) == key:
                group.append(run_id)
        return group

    def try_batch(self, run_ids: list[str]) -> dict[str, str]:
        """Lease what can be leased, then train it as one batch (or alone, if only one remains)."""
        outcomes: dict[str, str] = {}
        leases: dict[str, Lease] = {}
        try:
            for run_id in run_ids:
                if self.migration_stop(run_id):
                    outcomes[run_id] = "skip"
                    continue
                lease = Lease.acquire(self.store.run_dir(run_id), self.owner, self.options.lease_ttl)
                if lease is None:
                    outcomes[run_id] = "busy"
                    continue
                if self.migration_stop(run_id):
                    outcomes[run_id] = "skip"
                    lease.release()
                    continue
                health = self.store.inspect(run_id)
                if health.final(self.options.max_attempts):
                    self._final.add(run_id)
                    outcomes[run_id] = "skip"
                    lease.release()
                    continue
                leases[run_id] = lease
            if not leases:
                return outcomes
            # members must resume from the same step: keep the commonest one, leave the rest for later
            steps = {r: max(self.store.inspect(r).checkpoints, default=0) for r in leases}
            common_step = Counter(steps.values()).most_common(1)[0][0]
            members = [r for r in leases if steps[r] == common_step]
            for r in [r for r in leases if steps[r] != common_step]:
                leases.pop(r).release()
            if len(members) == 1:
                r = members[0]
                outcomes[r] = self._train(r, leases[r], self.store.inspect(r))
                return outcomes
            outcomes.update(self._train_batch(members, leases))
            return outcomes
        finally:
            for lease in leases.values():
                lease.release()

    @staticmethod
    def _any_lost(leases: dict[str, Lease]) -> bool:
        return any(lease.lost for lease in leases.values())

    def _train_batch(self, members: list[str], leases: dict[str, Lease]) -> dict[str, str]:
        from scaling.api import MembersOutOfStep, train_batched  # noqa: PLC0415

        commons = {r: self.prepare(r, leases[r], self.store.inspect(r), batch=len(members)) for r in members}
        try:
            cfgs = [self.store.config(r) for r in members]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                summaries = train_batched(cfgs, [self.store.run_dir(r) for r in members],
                                          should_stop=lambda: self.stop.is_set() or self._any_lost(leases))
            self.report_warnings(members, caught)
        except MembersOutOfStep as e:  # a checkpoint turned out unreadable: one at a time, nothing written
            self.log(f"batch of {len(members)}: {e}")
            self._solo |= set(members)
            return {r: self._train(r, leases[r], self.store.inspect(r)) for r in members}
        except Exception as e:  # noqa: BLE001 - recorded for every member, which is retried alone
            self._solo |= set(members)
            return {r: "lost" if leases[r].lost else self.record_failure(r, commons[r], e) for r in members}
        return {r: self.record(r, leases[r], commons[r], s) for r, s in zip(members, summaries)}

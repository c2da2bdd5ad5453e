"""SLURM executor: a job array of sweep workers through submitit (optional extra: pip install 'scaling[slurm]').

Each array task runs one worker (sweeps.worker) against the shared store; `slurm_array_parallelism`
caps how many run at once. On preemption or timeout submitit signals the task (USR2 by default) and
calls `SweepJob.checkpoint`: the worker stops after its current step, checkpoints the run, puts it back
to pending, and submitit requeues the task, which resumes from the store. A task that dies without the
signal (node failure) leaves a lease that expires after `lease_ttl` seconds; any live task then takes
the run over from its last checkpoint.

Cluster options are submitit's AutoExecutor parameters, given as --slurm KEY=VALUE, for example:
    timeout_min=240  slurm_partition=gpu  gpus_per_node=1  cpus_per_task=8  mem_gb=64
    slurm_account=myproj  slurm_qos=normal  slurm_constraint=a100  slurm_signal_delay_s=120
    slurm_setup='["module load cuda/12.4", "source ~/venv/bin/activate"]'
    max_num_timeout=20   (requeues allowed per task after preemption/timeout; default 20)
`--slurm-cluster local` runs the same code path with submitit's local executor (tests, a laptop).

One run over several hosts is one job instead (`submit_run(cfg, out_dir, nodes=N)`): N nodes with one
task each, every task a `MultiHostJob` that joins jax.distributed from the job's environment (submitit's
JobEnvironment: the first host of the job runs the coordinator) and then trains the run. With
`cluster="local"` the N "hosts" are N tasks on this machine.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from sweeps.progress import Display, snapshot
from sweeps.store import Store
from sweeps.worker import EXIT_DONE, WorkerOptions, run_worker, sweep_outcome

MAX_REQUEUES = 20
MISSING = "the slurm executor needs submitit: pip install 'scaling[slurm]' (or pip install submitit)"


def import_submitit():
    try:
        import submitit  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(MISSING) from e
    return submitit


class SweepJob:
    """The picklable callable every array task runs. The worker runs in a thread so that submitit's
    signal handler (main thread) can stop it, wait for its checkpoint, and requeue."""

    def __init__(self, store: str, experiment: str, options: WorkerOptions):
        self.store, self.experiment, self.options = str(store), experiment, options
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, index: int) -> int:
        self._stop = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["code"] = run_worker(self.store, self.experiment, self.options, stop=self._stop)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                outcome["error"] = e

        self._thread = threading.Thread(target=work, name=f"sweep-worker-{index}")
        self._thread.start()
        while self._thread.is_alive():  # short joins: the main thread stays free to take signals
            self._thread.join(0.5)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["code"]

    def checkpoint(self, index: int):
        """Called by submitit on preemption/timeout: checkpoint the current run, then requeue."""
        submitit = import_submitit()
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return submitit.helpers.DelayedSubmission(SweepJob(self.store, self.experiment, self.options), index)

    __submitit_checkpoint__ = checkpoint

    def __getstate__(self) -> dict:
        return {"store": self.store, "experiment": self.experiment, "options": self.options,
                "_stop": None, "_thread": None}


def parse_parameters(items: list[str]) -> dict[str, Any]:
    import json  # noqa: PLC0415

    from scaling.api import ConfigError  # noqa: PLC0415

    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--slurm {item!r} must look like KEY=VALUE (e.g. slurm_partition=gpu)")
        key, raw = item.split("=", 1)
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def submit(store: str | Path, experiment: str, workers: int, options: WorkerOptions,
           parameters: dict[str, Any] | None = None, cluster: str | None = None) -> list:
    """Submit `workers` array tasks; returns the submitit jobs."""
    submitit = import_submitit()
    store = Store(store)
    folder = store.root / "_submitit" / "%j"
    params = {"name": f"sweep-{experiment}", "timeout_min": 60, "slurm_array_parallelism": workers,
              **(parameters or {})}
    requeues = params.pop("max_num_timeout", MAX_REQUEUES)  # requeues allowed per task
    if cluster == "local":  # submitit's LocalExecutor itself: it also takes signal_delay_s and a float timeout
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=requeues)
        executor.update_parameters(**{k: v for k, v in params.items() if not k.startswith("slurm_")})
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=requeues)
        executor.update_parameters(**params)
    return executor.map_array(SweepJob(str(store.root), experiment, options), list(range(workers)))


def run_slurm(store: str | Path, experiment: str, workers: int, options: WorkerOptions,
              parameters: dict[str, Any] | None = None, cluster: str | None = None, wait: bool = True,
              progress: bool = True) -> int:
    jobs = submit(store, experiment, workers, options, parameters, cluster)
    print(f"submitted {len(jobs)} array tasks: {', '.join(j.job_id for j in jobs)} "
          f"(logs: {Path(store) / '_submitit'})", flush=True)
    if not wait:
        return EXIT_DONE
    st = Store(store)
    run_ids = st.manifest(experiment)["runs"]
    display = Display(f"sweep {experiment} (slurm, {workers} tasks)", enabled=progress)
    try:
        while not all(j.done() for j in jobs):
            display.update(snapshot(st, run_ids))
            time.sleep(2.0)
    finally:
        display.close(snapshot(st, run_ids))
    for j in jobs:
        try:
            rc = j.result()
            if rc != EXIT_DONE:
                print(f"task {j.job_id} exited with {rc}")
        except Exception as e:  # noqa: BLE001 - report every task's failure
            print(f"task {j.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    code, line = sweep_outcome(st, run_ids, options.max_attempts)  # the store's state, not the tasks' codes
    print(f"sweep {experiment}: {line}", flush=True)
    return code


# ---------------------------------------------------------------- one run over several hosts

PORT_RANGE = (61440, 4096)  # jax's SLURM rule (jax/_src/clusters/slurm_cluster.py): job id mod 4096, from 61440


def coordinator_port(job_id: str) -> int:
    """The coordinator's port for a job: the same on every task, and unlikely to collide between jobs."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return PORT_RANGE[0] + int(digits) % PORT_RANGE[1]


def job_processes(env: Any, port: int | None = None):
    """This task's place in a multi-host job, from a submitit JobEnvironment (SLURM's or the local
    executor's variables). One task per node drives all of its node's devices; several tasks per node
    drive one device each, numbered by the task's local rank."""
    from scaling.api import distributed_processes  # noqa: PLC0415

    tasks, nodes = env.num_tasks, env.num_nodes
    coordinator = f"{env.hostnames[0]}:{port or coordinator_port(env.raw_job_id)}"
    return distributed_processes(coordinator, tasks, env.global_rank, None if tasks == nodes else [env.local_rank])


class MultiHostJob:
    """What every task of a multi-host job runs: join jax.distributed (before any JAX computation), then
    fn(*args). Picklable (submitit pickles it with cloudpickle)."""

    def __init__(self, fn, *args, port: int | None = None, timeout_s: int = 300):
        self.fn, self.args, self.port, self.timeout_s = fn, args, port, timeout_s

    def __call__(self):
        from scaling.api import initialize_distributed  # noqa: PLC0415

        submitit = import_submitit()
        initialize_distributed(job_processes(submitit.JobEnvironment(), self.port), self.timeout_s)
        return self.fn(*self.args)


def multihost_parameters(nodes: int, parameters: dict[str, Any] | None = None, cluster: str | None = None) -> dict:
    """submitit parameters of one multi-host job: `nodes` nodes with one task each (on the local executor,
    `nodes` tasks on this machine); the rest as for the array (timeout_min, slurm_partition, gpus_per_node...)."""
    from scaling.api import ConfigError  # noqa: PLC0415

    if not isinstance(nodes, int) or nodes < 1:
        raise ConfigError(f"nodes={nodes!r} must be a positive integer (hosts of the run)")
    params = {"timeout_min": 60, **(parameters or {})}
    for key in ("nodes", "tasks_per_node", "slurm_array_parallelism"):
        if key in params:
            raise ConfigError(f"--slurm {key}={params[key]}: a multi-host run sets it "
                              f"(nodes={nodes}, one task per node)")
    if cluster == "local":
        return {**{k: v for k, v in params.items() if not k.startswith("slurm_")}, "tasks_per_node": nodes}
    return {**params, "nodes": nodes, "tasks_per_node": 1}


def multihost_executor(nodes: int, folder: str | Path, parameters: dict[str, Any] | None = None,
                       cluster: str | None = None):
    """The submitit executor of one multi-host job (submitit's logs under folder/<job id>)."""
    submitit = import_submitit()
    params = multihost_parameters(nodes, parameters, cluster)
    requeues = params.pop("max_num_timeout", MAX_REQUEUES)
    folder = Path(folder) / "%j"
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=requeues)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=requeues)
    executor.update_parameters(**params)
    return executor


def submit_multihost(fn, args: tuple, nodes: int, folder: str | Path, parameters: dict[str, Any] | None = None,
                     cluster: str | None = None, port: int | None = None, timeout_s: int = 300):
    """Submit one job of `nodes` hosts whose every task runs MultiHostJob(fn, *args); returns the job."""
    executor = multihost_executor(nodes, folder, parameters, cluster)
    return executor.submit(MultiHostJob(fn, *args, port=port, timeout_s=timeout_s))


def _train_run(cfg, out_dir: str) -> dict:
    from scaling.api import train  # noqa: PLC0415

    return train(cfg, out_dir)


def submit_run(cfg, out_dir: str | Path, nodes: int, parameters: dict[str, Any] | None = None,
               cluster: str | None = None, folder: str | Path | None = None, port: int | None = None):
    """Submit one run (a scaling.api.Config) trained over `nodes` hosts: one SLURM job of `nodes` nodes,
    one task each; submitit's logs go to folder (default: <out_dir>/_submitit/<job id>); port: the
    coordinator's (default: derived from the job id, coordinator_port). Every task returns the summary."""
    folder = Path(out_dir) / "_submitit" if folder is None else Path(folder)
    return submit_multihost(_train_run, (cfg, str(out_dir)), nodes, folder, parameters, cluster, port=port)

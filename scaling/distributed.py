"""Multi-host JAX: where this process sits in a job of several processes, and `jax.distributed.initialize`.

One process per host drives all of that host's accelerators; after initialisation `jax.devices()` lists
every process's devices, a mesh over them spans the hosts and jit-compiled steps run as one program with
collectives across processes (on CPU through gloo, jax's default CPU collectives). Three sources of the
layout, each validated before JAX is touched, with errors that name the flag or variable:

    from_arguments(coordinator="host:1234", num_processes=4, process_id=1)    explicit (the CLI's flags)
    from_environment()    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (none set: single process)
    from_slurm()          this SLURM step's variables (one task per host under srun); jax's own SLURM
                          detection derives the coordinator (first host of the step, a port from the job id,
                          or JAX_COORDINATOR_PORT)

`initialize(processes)` calls `jax.distributed.initialize` once, before any JAX computation, and is a no-op
for a single process; `is_primary()` says whether this process writes a run's files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Sequence

from scaling.config_io import ConfigError, require

logger = logging.getLogger(__name__)

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
# What jax's SLURM detection reads (jax/_src/clusters/slurm_cluster.py); SLURM sets them for every srun task.
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                   "SLURM_STEP_NUM_NODES")


class DistributedError(RuntimeError):
    """jax.distributed could not start: the coordinator was unreachable, or JAX had already started."""


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place in the job. coordinator: HOST:PORT of the coordination service that process 0
    starts (None under SLURM: jax derives it from the step). local_device_ids: the devices this process
    drives (None: every device the host makes visible to it)."""

    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    local_device_ids: tuple[int, ...] | None = None
    source: str = "single"  # single | arguments | environment | slurm

    @property
    def multi(self) -> bool:
        return self.num_processes > 1


SINGLE = Processes()


def _check(p: Processes, coordinator: str, num_processes: str, process_id: str) -> Processes:
    """Validate p; the names are how the user gave each value (a flag or an environment variable)."""
    require(p.num_processes >= 1, f"{num_processes}={p.num_processes} must be >= 1")
    require(0 <= p.process_id < p.num_processes,
            f"{process_id}={p.process_id} must be in [0, {num_processes}={p.num_processes})")
    if p.multi and p.source != "slurm":
        require(p.coordinator is not None, f"{coordinator} (HOST:PORT of process 0) is needed for "
                                           f"{num_processes}={p.num_processes} processes")
    if p.coordinator is not None:
        host, sep, port = p.coordinator.rpartition(":")
        require(bool(sep and host) and port.isdigit() and 0 < int(port) < 65536,
                f"{coordinator}={p.coordinator!r} must look like HOST:PORT (e.g. node001:61234)")
    if p.local_device_ids is not None:
        require(len(p.local_device_ids) > 0 and min(p.local_device_ids) >= 0
                and len(set(p.local_device_ids)) == len(p.local_device_ids),
                f"local device ids {list(p.local_device_ids)} must be distinct non-negative integers")
    return p


def _int(value: str | int, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be an integer") from None


def from_arguments(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                   local_device_ids: Sequence[int] | None = None) -> Processes:
    """An explicit layout (the same values on every process but process_id). Nothing given: single process."""
    if coordinator is None and num_processes is None and process_id is None:
        return SINGLE
    require(num_processes is not None, "--num-processes is needed with --coordinator/--process-id")
    require(process_id is not None or num_processes == 1, "--process-id is needed with --num-processes > 1")
    ids = None if local_device_ids is None else tuple(_int(i, "--local-device-ids") for i in local_device_ids)
    p = Processes(_int(num_processes, "--num-processes"), _int(process_id or 0, "--process-id"), coordinator,
                  ids, "arguments")
    return _check(p, "--coordinator", "--num-processes", "--process-id")


def from_environment(environ: Mapping[str, str] | None = None) -> Processes:
    """The layout from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (all or none; none:
    single process); JAX_LOCAL_DEVICE_IDS (comma-separated) as jax reads it."""
    env = os.environ if environ is None else environ
    names = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
    given = [n for n in names if env.get(n)]
    if not given:
        return SINGLE
    missing = [n for n in names if not env.get(n)]
    require(not missing, f"{', '.join(missing)} must be set with {', '.join(given)}")
    raw_ids = env.get("JAX_LOCAL_DEVICE_IDS")
    ids = None if not raw_ids else tuple(_int(i, "JAX_LOCAL_DEVICE_IDS") for i in raw_ids.split(","))
    p = Processes(_int(env[ENV_NUM_PROCESSES], ENV_NUM_PROCESSES), _int(env[ENV_PROCESS_ID], ENV_PROCESS_ID),
                  env[ENV_COORDINATOR], ids, "environment")
    return _check(p, *names)


def from_slurm(environ: Mapping[str, str] | None = None) -> Processes:
    """The layout of this SLURM step (run under srun, or submitit's SLURM executor). One task per node
    drives all of its node's devices; with several tasks per node each drives the device numbered by its
    SLURM_LOCALID (jax's convention for SLURM). A one-task step is a single process."""
    env = os.environ if environ is None else environ
    missing = [n for n in SLURM_VARIABLES if n not in env]
    if missing:
        raise ConfigError(f"SLURM variable {missing[0]} is not set: run the command under srun "
                          "(one task per host, e.g. srun --ntasks-per-node=1)")
    n = _int(env["SLURM_NTASKS"], "SLURM_NTASKS")
    nodes = _int(env["SLURM_STEP_NUM_NODES"], "SLURM_STEP_NUM_NODES")
    if n == 1:
        return SINGLE
    ids = None if n == nodes else (_int(env["SLURM_LOCALID"], "SLURM_LOCALID"),)
    p = Processes(n, _int(env["SLURM_PROCID"], "SLURM_PROCID"), env.get(ENV_COORDINATOR) or None, ids, "slurm")
    return _check(p, ENV_COORDINATOR, "SLURM_NTASKS", "SLURM_PROCID")


def jax_arguments(p: Processes, timeout_s: int = 300) -> dict:
    """The keyword arguments of jax.distributed.initialize for p. Under SLURM the coordinator is left to
    jax's SLURM detection; everything else is passed explicitly, so jax detects nothing more (an empty
    device list restricts no device: otherwise jax's SLURM rule would give a one-task-per-node process
    only its node's device 0)."""
    ids = [] if p.local_device_ids is None else list(p.local_device_ids)
    kwargs = {"coordinator_address": p.coordinator, "num_processes": p.num_processes, "process_id": p.process_id,
              "local_device_ids": ids or None, "initialization_timeout": int(timeout_s)}
    if p.source == "slurm":
        kwargs.update(cluster_detection_method="slurm", local_device_ids=ids)
    else:
        kwargs.update(cluster_detection_method="deactivate")
    return kwargs


def initialize(p: Processes, timeout_s: int = 300) -> Processes:
    """Join the job described by p (a no-op for one process). Call it before any JAX computation; calling
    it again with the same layout does nothing."""
    if not p.multi:
        return p
    import jax  # noqa: PLC0415 - scaling.distributed is imported by the CLI before JAX is needed

    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (p.num_processes, p.process_id):
            raise DistributedError(f"jax.distributed is already initialised as process {jax.process_index()} of "
                                   f"{jax.process_count()}, not {p.process_id} of {p.num_processes}")
        return p
    where = p.coordinator or "the SLURM step's first host"
    try:
        jax.distributed.initialize(**jax_arguments(p, timeout_s))
    except Exception as e:  # noqa: BLE001 - jax raises RuntimeError/XlaRuntimeError/ValueError: one message
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DistributedError(f"process {p.process_id} of {p.num_processes} could not join the coordinator at "
                               f"{where} (initialize before any JAX computation; timeout {timeout_s} s): "
                               f"{first}") from e
    if jax.process_count() != p.num_processes:
        raise DistributedError(f"jax sees {jax.process_count()} processes, expected {p.num_processes}")
    logger.info("jax.distributed: process %d of %d (%s), %d local of %d devices", p.process_id, p.num_processes,
                p.source, jax.local_device_count(), jax.device_count())
    return p


def describe() -> str:
    """One line on this process's place in the job (after initialize)."""
    import jax  # noqa: PLC0415

    return (f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
            f"{jax.local_device_count()} local of {jax.device_count()} {jax.devices()[0].platform} devices")


def is_primary() -> bool:
    """Whether this process writes a run's files (process 0; every process in a single-process run)."""
    import jax  # noqa: PLC0415

    return jax.process_index() == 0

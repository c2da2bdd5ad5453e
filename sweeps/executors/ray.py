"""Ray executor: N remote sweep workers on a Ray cluster (optional extra: pip install 'scaling[ray]').

Each task runs one worker (sweeps.worker) against a store every node can reach (a shared filesystem).
`address` is passed to ray.init ("auto" for the cluster this machine belongs to, "ray://host:10001" for
a remote one, None to start a local instance). Resources per worker: num_cpus / num_gpus (one GPU per
worker on a GPU cluster: Ray sets CUDA_VISIBLE_DEVICES for the task). A task lost with its node is
retried by Ray (max_retries); its run is taken over from the last checkpoint once the dead worker's
lease expires. Ray Tune is deliberately not used: the store's protocol supplies skip, resume and retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps.progress import Display, snapshot
from sweeps.store import Store
from sweeps.worker import EXIT_DONE, WorkerOptions, sweep_outcome

MISSING = "the ray executor needs Ray: pip install 'scaling[ray]' (or pip install 'ray[default]')"


def import_ray():
    try:
        import ray  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(MISSING) from e
    return ray


def _remote_worker(store: str, experiment: str, options: WorkerOptions, index: int) -> int:
    from sweeps.worker import run_worker  # noqa: PLC0415 - imported on the Ray node

    return run_worker(store, experiment, options)


def run_ray(store: str | Path, experiment: str, workers: int, options: WorkerOptions, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3, init_kwargs: dict[str, Any] | None = None,
            progress: bool = True) -> int:
    ray = import_ray()
    store = Store(store)
    run_ids = store.manifest(experiment)["runs"]
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(_remote_worker)
    refs = [remote.remote(str(store.root.resolve()), experiment, options, i) for i in range(workers)]
    display = Display(f"sweep {experiment} (ray, {workers} workers)", enabled=progress)
    try:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            display.update(snapshot(store, run_ids))
        for ref in refs:
            try:
                rc = ray.get(ref)
                if rc != EXIT_DONE:
                    print(f"ray worker exited with {rc}", flush=True)
            except Exception as e:  # noqa: BLE001 - report every task's failure
                print(f"ray worker failed: {type(e).__name__}: {e}", flush=True)
    finally:
        display.close(snapshot(store, run_ids))
    code, line = sweep_outcome(store, run_ids, options.max_attempts)  # the store's state, not the workers' codes
    print(f"sweep {experiment}: {line}", flush=True)
    return code


"""Executors start N copies of the sweep worker (sweeps.worker) on one store: local processes, a SLURM
job array through submitit, or Ray tasks. Skipping finished runs, resumption and retries come from the
store's status/lease protocol, not from the engine."""

EXECUTORS = ("local", "slurm", "ray")

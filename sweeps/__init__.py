"""Sweeps: the sweep language, the run store, workers and executors, experiment files.

    from sweeps.spec import axis, product, zip, chain, subsample, derived, log2_grid, steps_for_tokens
    from sweeps.experiment import load_experiment, expand        # file -> Experiment -> [RunSpec]
    from sweeps.store import Store                               # <store>/<run-id>/{run.json,status,...}
    from sweeps.worker import Worker, WorkerOptions, run_worker  # the claim-train-record loop
    from sweeps.executors.local import run_local                 # also .slurm.run_slurm, .ray.run_ray

Command line: `scaling sweep run|status|plan|list|consolidate|migrate` (sweeps.cli; migrate re-keys a
store registered by older code: sweeps.migrate). The modules that train (worker, executors)
import JAX lazily, so expanding and inspecting sweeps stays cheap.
"""

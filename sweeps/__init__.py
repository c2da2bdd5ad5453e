"""Sweeps: the sweep language, the run store, workers and executors, experiment files."""

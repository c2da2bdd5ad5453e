"""Experiment files: one small module per sweep (BASE, SWEEP, optional ANALYSIS and BATCH); run one with
`scaling sweep run <name> --store DIR`. Files starting with "_" are not listed."""

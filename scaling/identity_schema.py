"""The identity-schema version of run ids (scaling.identity explains the rule and its migrations).

Alone in its module so that readers of a store (sweeps.store, `scaling sweep status`) can compare a
run.json's schema with this code's without importing the config classes (and with them JAX)."""

IDENTITY_SCHEMA = 1

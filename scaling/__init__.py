"""Train one run: models, parametrizations, optimizers, norms, data, the training loop."""

from scaling.host_memory import keep_freed_memory

keep_freed_memory()  # before JAX starts its CPU thread pool (see scaling/host_memory.py)

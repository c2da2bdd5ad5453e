"""Train one run: models, parametrizations, optimizers, norms, data, the training loop."""

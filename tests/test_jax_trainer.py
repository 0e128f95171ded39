"""JAX only: the jitted training step is compiled once per model shape, not once per Trainer."""

import numpy as np
import pytest

from common.interface import TrainConfig
from frameworks import BackendUnavailable, get_backend


def test_second_trainer_reuses_the_compiled_step(fashion_mnist):
    try:
        backend = get_backend("jax")
    except BackendUnavailable as err:
        pytest.skip(f"jax not installed in this env: {err.__cause__}")
    from frameworks.jax.train import _train_step

    config = TrainConfig(epochs=1)
    first_batch = np.arange(config.batch_size)
    trainer = backend.make_trainer(backend.build(config.variant, config.device), fashion_mnist, config)
    trainer.step(first_batch)
    trainer.step(first_batch)
    compiled = _train_step._cache_size()
    # A new trainer, even for a newly built model, and its second step: nothing compiles again.
    trainer = backend.make_trainer(backend.build(config.variant, config.device), fashion_mnist, config)
    trainer.step(first_batch)
    trainer.step(first_batch)
    assert _train_step._cache_size() == compiled

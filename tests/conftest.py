"""Shared fixtures: one backend at a time, real data when present, reproducible random tensors."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from common import spec
from common.data import DataError, load_fashion_mnist
from common.interface import TrainConfig
from common.pitfalls import PitfallContext
from common.weights import init_weights
from frameworks import ALL_BACKENDS, BACKENDS, BackendUnavailable, get_backend

# Set by tox ({env_name}): in a framework's own env that framework must import. A broken install
# there fails the run loudly instead of quietly skipping every test.
REQUIRED_BACKEND = os.environ.get("LENET_REQUIRED_BACKEND")


def pytest_sessionstart(session):
    if REQUIRED_BACKEND in BACKENDS:
        try:
            get_backend(REQUIRED_BACKEND)
        except BackendUnavailable as err:
            raise pytest.UsageError(f"the {REQUIRED_BACKEND} env must be able to import its framework: {err}") from err


@pytest.fixture(scope="session", params=ALL_BACKENDS)
def backend(request):
    if request.param not in BACKENDS and REQUIRED_BACKEND in BACKENDS:
        # The numpy oracle needs no framework: the parity env tests it, once, instead of all four envs.
        pytest.skip(f"the {request.param} backend is tested in the parity env, not in each framework's")
    try:
        return get_backend(request.param)
    except BackendUnavailable as err:
        pytest.skip(f"{request.param} not installed in this env: {err.__cause__}")


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real data, cut to quick subsets; skips (with the reason) when the files are absent."""
    try:
        return load_fashion_mnist(download=False, train_subset=4096, test_subset=1000)
    except DataError as err:
        pytest.skip(f"real Fashion-MNIST not available: {err}")


@pytest.fixture
def tiny_pitfall_context(fashion_mnist):
    """A PitfallContext in which a backend's measure() runs every pitfall in seconds: 512 training
    and 256 test images, one epoch of the d2l recipe from init_weights(0), 5 Adam steps."""
    data = replace(
        fashion_mnist, train_images=fashion_mnist.train_images[:512], train_labels=fashion_mnist.train_labels[:512],
        test_images=fashion_mnist.test_images[:256], test_labels=fashion_mnist.test_labels[:256],
    )
    config = TrainConfig(epochs=1)
    return PitfallContext(data=data, config=config, initial=init_weights(config.seed), short_epochs=1, first_steps=5)


def random_weights(seed: int = 1):
    """Non-symmetric weights with nonzero biases: a transposed or mis-permuted tensor shows."""
    rng = np.random.default_rng(seed)
    weights = init_weights(seed)
    return {name: (w + rng.normal(0, 0.2, w.shape)).astype(np.float32) for name, w in weights.items()}


def random_batch(n: int = 16, seed: int = 2):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *spec.INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, spec.NUM_CLASSES, n)
    return x, y

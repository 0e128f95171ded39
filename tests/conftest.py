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


# Adam's eps, guarded in PyTorch and optax: every hyperparameter off its default (so each must come
# from the config), and an eps as large as the gradients, so its value and its place move every update.
ADAM_EPS_CONFIG = TrainConfig(optimizer="adam", lr=0.01, beta1=0.8, beta2=0.99, eps=1e-3)
ADAM_EPS_RTOL = 1e-5  # float32 updates against float64 ones


def eps_sized_gradients(steps: int = 5, size: int = 64, seed: int = 3) -> list[np.ndarray]:
    """Gradients from eps/10 to 10 eps, of both signs: where sqrt(v) is as small as eps."""
    rng = np.random.default_rng(seed)
    eps = ADAM_EPS_CONFIG.eps
    return [eps * 10 ** rng.uniform(-1, 1, size) * rng.choice([-1.0, 1.0], size) for _ in range(steps)]


def adam_path(gradients, config: TrainConfig = ADAM_EPS_CONFIG, eps_inside_sqrt: bool = False) -> np.ndarray:
    """The parameters, from zeros, after each Adam step, in float64: PyTorch's Adam (eps added to sqrt(v_hat)),
    or the mistake of adding eps inside the square root."""
    m = v = w = np.zeros_like(gradients[0])
    path = []
    for t, g in enumerate(gradients, 1):
        m = config.beta1 * m + (1 - config.beta1) * g
        v = config.beta2 * v + (1 - config.beta2) * g**2
        m_hat, v_hat = m / (1 - config.beta1**t), v / (1 - config.beta2**t)
        w = w - config.lr * m_hat / (np.sqrt(v_hat + config.eps) if eps_inside_sqrt else np.sqrt(v_hat) + config.eps)
        path.append(w)
    return np.array(path)


def oracle_adam_path(gradients, config: TrainConfig = ADAM_EPS_CONFIG) -> np.ndarray:
    """The same steps by the numpy backend's Adam, the float64 oracle the backends are tested against."""
    from frameworks.numpy.train import Adam

    adam, params, path = Adam(config.lr, config.beta1, config.beta2, config.eps), {"w": np.zeros_like(gradients[0])}, []
    for g in gradients:
        params = adam.update(params, {"w": g})
        path.append(params["w"])
    return np.array(path)


def assert_adam_matches_the_oracle(path: np.ndarray, gradients) -> None:
    """A framework's Adam path against the oracle's, where another eps or eps inside the square root
    would be far outside the tolerance (checked here too, so the test can see what it guards)."""
    oracle = oracle_adam_path(gradients)
    np.testing.assert_allclose(adam_path(gradients), oracle, rtol=1e-12)  # the hand-written formula is the oracle's
    scale = np.abs(oracle).max()
    for mistaken in (adam_path(gradients, replace(ADAM_EPS_CONFIG, eps=1e-8)), adam_path(gradients, eps_inside_sqrt=True)):
        assert np.abs(mistaken - oracle).max() > 100 * ADAM_EPS_RTOL * scale
    assert np.abs(np.asarray(path, np.float64) - oracle).max() <= ADAM_EPS_RTOL * scale

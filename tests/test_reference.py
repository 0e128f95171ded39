"""The NumPy oracle checked against finite differences, so it can judge the frameworks."""

from __future__ import annotations

import numpy as np
import pytest

from common import reference, spec
from tests.conftest import random_batch, random_weights


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_gradients_match_finite_differences(variant):
    weights = {k: v.astype(np.float64) for k, v in random_weights().items()}
    x, y = random_batch(4)
    loss, grads = reference.loss_and_grads(weights, x, y, variant)
    assert loss == pytest.approx(reference.cross_entropy(reference.forward(weights, x, variant), y))
    rng = np.random.default_rng(0)
    for name, grad in grads.items():
        assert grad.shape == weights[name].shape
        for _ in range(3):
            index = tuple(rng.integers(0, n) for n in grad.shape)
            step = 1e-6
            plus = {**weights, name: weights[name].copy()}
            plus[name][index] += step
            minus = {**weights, name: weights[name].copy()}
            minus[name][index] -= step
            numeric = (
                reference.cross_entropy(reference.forward(plus, x, variant), y)
                - reference.cross_entropy(reference.forward(minus, x, variant), y)
            ) / (2 * step)
            assert grad[index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), (name, index)


def test_cross_entropy_of_uniform_logits_is_log10():
    assert reference.cross_entropy(np.zeros((5, 10)), [0, 1, 2, 3, 4]) == pytest.approx(np.log(10))


def test_forward_uses_canonical_flatten_order():
    """Zeroing fc1's columns of channel 0 (C,H,W order: the first 25) removes that channel's influence."""
    weights = random_weights()
    x, _ = random_batch(2)
    cut = {**weights, "conv2.weight": weights["conv2.weight"].copy(), "conv2.bias": weights["conv2.bias"].copy()}
    cut["conv2.weight"][0] += 5.0  # change channel 0 of conv2 only
    fc1 = weights["fc1.weight"].copy()
    fc1[:, :25] = 0
    base = reference.forward({**weights, "fc1.weight": fc1}, x)
    np.testing.assert_allclose(reference.forward({**cut, "fc1.weight": fc1}, x), base)

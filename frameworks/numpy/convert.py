"""Canonical weights <-> the numpy backend's parameters: the same layout, held in float64."""

from __future__ import annotations

import numpy as np

from common.weights import DTYPE, Weights, check_weights
from frameworks.numpy.model import LeNet


def canonical_params(model: LeNet) -> dict[str, np.ndarray]:
    return model.params


def get_weights(model: LeNet) -> Weights:
    return {key: value.astype(DTYPE) for key, value in canonical_params(model).items()}


def set_weights(model: LeNet, weights: Weights) -> None:
    # float32 -> float64 is exact, so get_weights returns the same bits.
    model.params = {key: value.astype(np.float64) for key, value in check_weights(weights, model.variant).items()}

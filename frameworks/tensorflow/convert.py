"""Canonical weights <-> Keras variables.

Keras holds conv kernels H,W,I,O and dense kernels (in, out), and its Flatten runs over N,H,W,C;
common.weights.to_channels_last / from_channels_last undo all three (shared with Flax). Gradients
cross the boundary through the same functions, since they have their variables' layout.
"""

from __future__ import annotations

import keras
import numpy as np

from common import spec
from common.weights import Weights, check_weights, from_channels_last, to_channels_last


def canonical_params(model: keras.Model) -> dict[str, keras.Variable]:
    """Canonical name -> Keras variable, walking the spec's parameter layers (the same in both variants)."""
    params = {}
    for layer in spec.param_layers():
        keras_layer = model.get_layer(layer.name)
        params[f"{layer.name}.weight"], params[f"{layer.name}.bias"] = keras_layer.kernel, keras_layer.bias
    return params


def to_canonical(model: keras.Model, arrays_by_path: dict[str, np.ndarray]) -> Weights:
    """Canonical weights from Keras-layout arrays keyed by variable path (values or gradients)."""
    return from_channels_last({key: arrays_by_path[v.path] for key, v in canonical_params(model).items()})


def get_weights(model: keras.Model) -> Weights:
    return from_channels_last({key: v.numpy() for key, v in canonical_params(model).items()})


def set_weights(model: keras.Model, weights: Weights) -> None:
    arrays = to_channels_last(check_weights(weights))
    for key, variable in canonical_params(model).items():
        variable.assign(arrays[key])

"""Canonical weights <-> Keras variables.

The canonical layout is PyTorch's; Keras differs in three ways, each undone in one place:
conv kernels (_conv_kernel), dense kernels (_dense_kernel) and the order of fc1's inputs
(common.weights.hwc_columns, shared with Flax). Gradients cross the boundary through the same
functions (to_canonical).
"""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np

from common import spec
from common.weights import Weights, check_weights, chw_columns, hwc_columns

_PARAM_LAYERS = [layer for layer in spec.layers() if layer.param_count]  # the same in every variant
_FLATTENED_CHW = spec.flattened_inputs()  # fc1 reads the flattened (16, 5, 5) map


def _conv_kernel(oihw: np.ndarray) -> np.ndarray:
    """Canonical (out, in, H, W) -> Keras (H, W, in, out), the layout TensorFlow's conv2d takes."""
    return oihw.transpose(2, 3, 1, 0)


def _conv_kernel_back(hwio: np.ndarray) -> np.ndarray:
    return hwio.transpose(3, 2, 0, 1)


def _dense_kernel(out_in: np.ndarray) -> np.ndarray:
    """Canonical (out, in) -> Keras (in, out): Keras's Dense computes x @ kernel, PyTorch's x @ weight.T."""
    return out_in.T


def _to_keras(layer: spec.Layer, weight: np.ndarray) -> np.ndarray:
    if layer.kind == "conv":
        return _conv_kernel(weight)
    if layer.name in _FLATTENED_CHW:
        weight = hwc_columns(weight, _FLATTENED_CHW[layer.name])  # Keras's Flatten runs over N,H,W,C
    return _dense_kernel(weight)


def _from_keras(layer: spec.Layer, kernel: np.ndarray) -> np.ndarray:
    if layer.kind == "conv":
        return _conv_kernel_back(kernel)
    weight = _dense_kernel(kernel)  # a transpose is its own inverse
    if layer.name in _FLATTENED_CHW:
        weight = chw_columns(weight, _FLATTENED_CHW[layer.name])
    return weight


def to_canonical(model: keras.Model, arrays: Mapping[str, np.ndarray]) -> Weights:
    """Canonical weights from Keras-layout arrays keyed by variable path (values or gradients)."""
    weights = {}
    for layer in _PARAM_LAYERS:
        keras_layer = model.get_layer(layer.name)
        weights[f"{layer.name}.weight"] = np.ascontiguousarray(_from_keras(layer, arrays[keras_layer.kernel.path]))
        weights[f"{layer.name}.bias"] = np.array(arrays[keras_layer.bias.path])
    return weights


def get_weights(model: keras.Model) -> Weights:
    return to_canonical(model, {variable.path: variable.numpy() for variable in model.weights})


def set_weights(model: keras.Model, weights: Weights) -> None:
    weights = check_weights(weights)
    for layer in _PARAM_LAYERS:
        keras_layer = model.get_layer(layer.name)
        keras_layer.kernel.assign(_to_keras(layer, weights[f"{layer.name}.weight"]))
        keras_layer.bias.assign(weights[f"{layer.name}.bias"])

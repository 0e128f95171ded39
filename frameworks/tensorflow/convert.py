"""Canonical weights <-> Keras variables.

The canonical layout is PyTorch's; Keras differs in three ways, each undone in one function:
conv kernels (_conv_kernel), dense kernels (_dense_kernel) and the order of fc1's inputs
(_hwc_columns). Gradients cross the boundary through the same functions (to_canonical).
"""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np

from common import spec
from common.weights import Weights, check_weights

_PARAM_LAYERS = [layer for layer in spec.layers() if layer.param_count]  # the same in every variant


def _flattened_chw() -> dict[str, tuple[int, int, int]]:
    """Each dense layer that reads a flatten, with the C,H,W shape that flatten unrolls (fc1: 16,5,5)."""
    net = spec.layers()
    return {net[i + 1].name: net[i - 1].output_shape for i, layer in enumerate(net) if layer.kind == "flatten"}


_FLATTENED_CHW = _flattened_chw()


def _conv_kernel(oihw: np.ndarray) -> np.ndarray:
    """Canonical (out, in, H, W) -> Keras (H, W, in, out), the layout TensorFlow's conv2d takes."""
    return oihw.transpose(2, 3, 1, 0)


def _conv_kernel_back(hwio: np.ndarray) -> np.ndarray:
    return hwio.transpose(3, 2, 0, 1)


def _dense_kernel(out_in: np.ndarray) -> np.ndarray:
    """Canonical (out, in) -> Keras (in, out): Keras's Dense computes x @ kernel, PyTorch's x @ weight.T."""
    return out_in.T


def _hwc_columns(matrix: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder the input columns of a dense matrix from C,H,W to H,W,C order.

    PyTorch flattens an N,C,H,W map in C,H,W order, Keras's Flatten an N,H,W,C map in H,W,C
    order: the same input lands in a different column, so fc1's columns move with it.
    """
    c, h, w = chw
    return matrix.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(matrix.shape)


def _chw_columns(matrix: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """The inverse of _hwc_columns."""
    c, h, w = chw
    return matrix.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(matrix.shape)


def _to_keras(layer: spec.Layer, weight: np.ndarray) -> np.ndarray:
    if layer.kind == "conv":
        return _conv_kernel(weight)
    if layer.name in _FLATTENED_CHW:
        weight = _hwc_columns(weight, _FLATTENED_CHW[layer.name])
    return _dense_kernel(weight)


def _from_keras(layer: spec.Layer, kernel: np.ndarray) -> np.ndarray:
    if layer.kind == "conv":
        return _conv_kernel_back(kernel)
    weight = _dense_kernel(kernel)  # a transpose is its own inverse
    if layer.name in _FLATTENED_CHW:
        weight = _chw_columns(weight, _FLATTENED_CHW[layer.name])
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

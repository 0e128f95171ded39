"""Canonical weights <-> Flax parameters: every kernel is transposed, fc1 is also permuted.

Flax stores conv kernels H,W,I,O (canonical: O,I,H,W) and dense kernels (in, out) (canonical:
(out, in)). Its flatten runs over N,H,W,C, so fc1's 400 inputs arrive in H,W,C order while the
canonical fc1.weight columns are in C,H,W order: those columns are permuted too, by the same
common.weights functions Keras uses. The same functions convert gradients, which have the
parameters' layout.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from common import spec
from common.weights import DTYPE, Weights, check_weights, chw_columns, hwc_columns
from frameworks.jax.model import LeNet, model_device


def _to_flax(kind: str, weight: np.ndarray, flattened_chw=None) -> np.ndarray:
    if kind == "conv":
        return weight.transpose(2, 3, 1, 0)  # O,I,H,W -> H,W,I,O
    if flattened_chw:
        weight = hwc_columns(weight, flattened_chw)
    return weight.T  # (out, in) -> (in, out)


def _from_flax(kind: str, kernel: np.ndarray, flattened_chw=None) -> np.ndarray:
    if kind == "conv":
        return kernel.transpose(3, 2, 0, 1)  # H,W,I,O -> O,I,H,W
    weight = kernel.T  # (in, out) -> (out, in)
    if flattened_chw:
        weight = chw_columns(weight, flattened_chw)
    return weight


def _param_layers(variant: str):
    return [layer for layer in spec.layers(variant) if layer.kind in ("conv", "dense")]


def to_canonical(params: nnx.State, variant: str) -> Weights:
    """A Flax parameter tree (or a gradient tree: same layout) -> canonical float32 NumPy arrays."""
    flattened = spec.flattened_inputs(variant)
    weights = {}
    for layer in _param_layers(variant):
        kernel = np.asarray(params[layer.name]["kernel"][...])
        weights[f"{layer.name}.weight"] = np.array(_from_flax(layer.kind, kernel, flattened.get(layer.name)), DTYPE, order="C")
        weights[f"{layer.name}.bias"] = np.array(params[layer.name]["bias"][...], DTYPE)
    return weights


def get_weights(model: LeNet) -> Weights:
    return to_canonical(nnx.state(model, nnx.Param), model.variant)


def set_weights(model: LeNet, weights: Weights) -> None:
    weights = check_weights(weights, model.variant)
    flattened = spec.flattened_inputs(model.variant)
    device = model_device(model)
    for layer in _param_layers(model.variant):
        module = getattr(model, layer.name)
        kernel = _to_flax(layer.kind, weights[f"{layer.name}.weight"], flattened.get(layer.name))
        module.kernel[...] = jax.device_put(np.ascontiguousarray(kernel), device)
        module.bias[...] = jax.device_put(weights[f"{layer.name}.bias"].copy(), device)

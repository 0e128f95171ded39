"""Canonical weights <-> Flax parameters: every kernel is transposed, fc1 is also permuted.

Flax stores conv kernels H,W,I,O (canonical: O,I,H,W) and dense kernels (in, out) (canonical:
(out, in)). Its flatten runs over N,H,W,C, so fc1's 400 inputs arrive in H,W,C order while the
canonical fc1.weight columns are in C,H,W order: those columns are permuted too. Without that
permutation every shape still fits and the network silently computes something else. The same
functions convert gradients, which have the parameters' layout.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from common import spec
from common.weights import DTYPE, Weights, check_weights
from frameworks.jax.model import LeNet, model_device


def _flattened_inputs(variant: str) -> dict[str, tuple[int, ...]]:
    """The dense layer right after the flatten, with the C,H,W shape it receives flattened: fc1 <- (16, 5, 5)."""
    layers = spec.layers(variant)
    return {after.name: before.output_shape for before, flat, after in zip(layers, layers[1:], layers[2:]) if flat.kind == "flatten"}


def _to_flax(kind: str, weight: np.ndarray, flattened_chw=None) -> np.ndarray:
    if kind == "conv":
        return weight.transpose(2, 3, 1, 0)  # O,I,H,W -> H,W,I,O
    if flattened_chw:  # columns C,H,W -> H,W,C
        c, h, w = flattened_chw
        weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return weight.T  # (out, in) -> (in, out)


def _from_flax(kind: str, kernel: np.ndarray, flattened_chw=None) -> np.ndarray:
    if kind == "conv":
        return kernel.transpose(3, 2, 0, 1)  # H,W,I,O -> O,I,H,W
    weight = kernel.T  # (in, out) -> (out, in)
    if flattened_chw:  # columns H,W,C -> C,H,W
        c, h, w = flattened_chw
        weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
    return weight


def _param_layers(variant: str):
    return [layer for layer in spec.layers(variant) if layer.kind in ("conv", "dense")]


def to_canonical(params: nnx.State, variant: str) -> Weights:
    """A Flax parameter tree (or a gradient tree: same layout) -> canonical float32 NumPy arrays."""
    flattened = _flattened_inputs(variant)
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
    flattened = _flattened_inputs(model.variant)
    device = model_device(model)
    for layer in _param_layers(model.variant):
        module = getattr(model, layer.name)
        kernel = _to_flax(layer.kind, weights[f"{layer.name}.weight"], flattened.get(layer.name))
        module.kernel[...] = jax.device_put(np.ascontiguousarray(kernel), device)
        module.bias[...] = jax.device_put(weights[f"{layer.name}.bias"].copy(), device)

"""Canonical weights <-> Flax parameters.

Flax holds conv kernels H,W,I,O and dense kernels (in, out), and flattens N,H,W,C maps in H,W,C
order; common.weights.to_channels_last / from_channels_last undo all three (shared with Keras).
Gradients have their parameters' layout and go through the same functions.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from common import spec
from common.weights import Weights, check_weights, from_channels_last, to_channels_last
from frameworks.jax.model import LeNet, model_device


def canonical_params(tree) -> dict:
    """Canonical name -> Flax leaf, walking the spec's parameter layers; `tree` is a model or a state
    of one (parameters or gradients: they share the paths conv1/kernel, conv1/bias, ...)."""
    return {
        f"{layer.name}.{kind}": tree[layer.name][flax_name] if isinstance(tree, nnx.State) else getattr(getattr(tree, layer.name), flax_name)
        for layer in spec.param_layers()
        for kind, flax_name in (("weight", "kernel"), ("bias", "bias"))
    }


def to_canonical(tree) -> Weights:
    """Canonical float32 NumPy weights from a model or from a gradient state."""
    return from_channels_last({key: np.asarray(leaf[...]) for key, leaf in canonical_params(tree).items()})


def get_weights(model: LeNet) -> Weights:
    return to_canonical(model)


def set_weights(model: LeNet, weights: Weights) -> None:
    arrays = to_channels_last(check_weights(weights, model.variant), model.variant)
    device = model_device(model)
    for key, param in canonical_params(model).items():
        param[...] = jax.device_put(arrays[key], device)

"""Canonical weights <-> PyTorch parameters.

The canonical layout *is* PyTorch's (OIHW kernels, (out, in) matrices, C,H,W flatten) and the
modules are named after the spec's layers, so a parameter's PyTorch name is its canonical name:
no transposes here, unlike the Keras and Flax backends.
"""

from __future__ import annotations

import torch

from common import spec
from common.weights import Weights, check_weights


def canonical_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Canonical name -> parameter, walking the spec's parameter layers (the same in both variants)."""
    return {
        f"{layer.name}.{kind}": getattr(model, layer.name).get_parameter(kind)
        for layer in spec.param_layers()
        for kind in ("weight", "bias")
    }


def get_weights(model: torch.nn.Module) -> Weights:
    return {key: param.detach().cpu().numpy().copy() for key, param in canonical_params(model).items()}


@torch.no_grad()
def set_weights(model: torch.nn.Module, weights: Weights) -> None:
    weights = check_weights(weights)
    for key, param in canonical_params(model).items():
        param.copy_(torch.from_numpy(weights[key]))  # in place: an optimizer holding the parameter keeps it

"""Canonical weights <-> PyTorch parameters.

The canonical layout *is* PyTorch's (OIHW kernels, (out, in) matrices, C,H,W flatten) and the
modules are named after the spec's layers, so state_dict keys equal canonical names: no
transposes here, unlike the Keras and Flax backends.
"""

from __future__ import annotations

import torch

from common.weights import Weights, check_weights


def get_weights(model: torch.nn.Module) -> Weights:
    return {key: tensor.detach().cpu().numpy().copy() for key, tensor in model.state_dict().items()}


def set_weights(model: torch.nn.Module, weights: Weights) -> None:
    weights = check_weights(weights)
    device = next(model.parameters()).device
    model.load_state_dict({key: torch.from_numpy(array.copy()).to(device) for key, array in weights.items()})

"""Canonical weights <-> Gluon parameters.

Gluon holds the canonical layout already (OIHW kernels, (out, in) matrices, fc1's inputs in
C,H,W order), so no transposes. Only the names differ: Gluon names a parameter
"<block prefix><kind>" ("conv1_weight"), the canonical name is "<layer>.<kind>" ("conv1.weight").
"""

from __future__ import annotations

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from common import spec
from common.weights import Weights, check_weights


def canonical_params(model: nn.HybridSequential) -> dict[str, gluon.Parameter]:
    """Canonical name -> Gluon parameter, walking the spec's parameter layers (the same in both variants)."""
    blocks = {block.name: block for block in model}  # blocks are named after the spec's layers
    return {
        f"{layer.name}.{kind}": getattr(blocks[layer.name], kind)
        for layer in spec.param_layers()
        for kind in ("weight", "bias")
    }


def get_weights(model: nn.HybridSequential) -> Weights:
    return {key: param.data().asnumpy() for key, param in canonical_params(model).items()}


def set_weights(model: nn.HybridSequential, weights: Weights) -> None:
    weights = check_weights(weights)
    for key, param in canonical_params(model).items():
        param.set_data(mx.nd.array(weights[key]))  # copies in place, so a hybridized graph keeps seeing these arrays

"""The network is common.spec walked by common.reference; the model is just its weights."""

from __future__ import annotations

import numpy as np

from common import reference, spec
from common.interface import DeviceUnavailable, LayerRow, canonical_shape, choose_device
from common.weights import init_weights

name = "numpy"
data_format = "NCHW"  # the canonical layout: the oracle defines it


class LeNet:
    """The variant and its parameters in float64, under their canonical names."""

    def __init__(self, variant: str, weights):
        self.variant = variant
        self.params = {key: np.asarray(value, np.float64) for key, value in weights.items()}


def version() -> str:
    return np.__version__


def devices() -> list[str]:
    return ["cpu"]


def resolve_device(device: str) -> str:
    if choose_device(device, devices()) == "gpu":
        raise DeviceUnavailable("device='gpu', but the numpy backend has no GPU code: it runs on the CPU only; use device='cpu'")
    return "cpu"


def model_device(model: LeNet) -> str:
    return "cpu"


def build(variant: str = "classic", device: str = "cpu") -> LeNet:
    """The network with the canonical Xavier-uniform weights of seed 0 and zero biases."""
    resolve_device(device)
    return LeNet(variant, init_weights(0, variant))


def param_count(model: LeNet) -> int:
    return sum(value.size for value in model.params.values())


def layer_summary(model: LeNet) -> list[LayerRow]:
    """Push one dummy image through the reference and record each layer's output."""
    outputs = reference.layer_outputs(model.params, np.zeros((1, *spec.INPUT_SHAPE)), model.variant)
    return [
        LayerRow(layer.name, layer.kind, canonical_shape(out.shape[1:], data_format), tuple(out.shape[1:]), layer.param_count)
        for layer, out in zip(spec.layers(model.variant), outputs)
    ]

"""Build LeNet from common.spec as a Flax NNX module, and measure its shapes."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from common import spec
from common.interface import DeviceUnavailable, LayerRow, canonical_shape, choose_device

name = "jax"
data_format = "NHWC"  # Flax convolves channels-last; to_nhwc() converts the canonical NCHW input

# The CPU wheels never see a GPU. Worded without brackets: the CLI prints errors through rich,
# which would swallow the "[cuda12]" of the pip command as markup.
GPU_INSTALL = "install JAX's CUDA build (the cuda12 extra of jax==0.10.1; see requirements/jax.txt)"
XAVIER = nnx.initializers.xavier_uniform()  # Flax's default kernel init is lecun_normal (biases: zeros)
# On a GPU, JAX's default precision runs float32 convolutions and matmuls in TF32 (about 1e-3
# relative error); "highest" keeps true float32 there, as the parity checks need. No effect on CPU.
PRECISION = "highest"


def to_nhwc(x):
    """Canonical N,C,H,W -> Flax's N,H,W,C: the one layout conversion, for any input batch."""
    return x.transpose(0, 2, 3, 1)


def flatten(x):
    """Flattens N,H,W,C, so the 400 features come out in H,W,C order, not the canonical C,H,W:
    convert.py permutes fc1's columns to match."""
    return x.reshape(x.shape[0], -1)


@functools.cache
def _pool(pool_function, size: int, stride: int):
    """One pooling function per (kind, size, stride), shared by every model: the jitted training step
    is cached on the model's graph definition, which compares these by identity, so a new one per
    build() would recompile the step for every new model."""
    return functools.partial(pool_function, window_shape=(size, size), strides=(stride, stride))


_LAYERS = {
    # Flax names its padding ("SAME", "VALID") instead of counting pixels: see spec.padding_name
    "conv": lambda h, rngs: nnx.Conv(
        h["in_channels"], h["out_channels"], (h["kernel_size"], h["kernel_size"]), padding=spec.padding_name(h).upper(),
        kernel_init=XAVIER, bias_init=nnx.initializers.zeros_init(), precision=PRECISION, rngs=rngs,
    ),
    "dense": lambda h, rngs: nnx.Linear(
        h["in_features"], h["out_features"],
        kernel_init=XAVIER, bias_init=nnx.initializers.zeros_init(), precision=PRECISION, rngs=rngs,
    ),
    "sigmoid": lambda h, rngs: nnx.sigmoid,
    "relu": lambda h, rngs: nnx.relu,
    "avg_pool": lambda h, rngs: _pool(nnx.avg_pool, int(h["size"]), int(h["stride"])),
    "max_pool": lambda h, rngs: _pool(nnx.max_pool, int(h["size"]), int(h["stride"])),
    "flatten": lambda h, rngs: flatten,
    # Off (deterministic) unless a training step views the model with deterministic=False.
    "dropout": lambda h, rngs: nnx.Dropout(h["rate"], deterministic=True, rngs=rngs),
}


class LeNet(nnx.Module):
    """One attribute per spec layer, named after it (so parameter paths read conv1/kernel ...)."""

    def __init__(self, variant: str, rngs: nnx.Rngs):
        self.variant = variant
        self.layer_names = tuple(layer.name for layer in spec.layers(variant))
        for layer in spec.layers(variant):
            setattr(self, layer.name, _LAYERS[layer.kind](layer.hyper, rngs))

    def layers(self) -> list[tuple[str, object]]:
        return [(layer_name, getattr(self, layer_name)) for layer_name in self.layer_names]

    def __call__(self, x):
        """Logits for an N,H,W,C float32 batch."""
        for _, layer in self.layers():
            x = layer(x)
        return x


def version() -> str:
    return jax.__version__


def _gpus() -> list:
    try:
        return jax.local_devices(backend="gpu")
    except RuntimeError:  # raised when no GPU platform is installed or none is visible
        return []


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if _gpus() else [])


def resolve_device(device: str):
    if choose_device(device, devices()) == "gpu":
        gpus = _gpus()
        if not gpus:
            raise DeviceUnavailable(f"device='gpu' but JAX sees no GPU; use device='cpu' or {GPU_INSTALL}")
        return gpus[0]
    # This process's own device: in a multi-process run jax.devices() lists every process's devices.
    return jax.local_devices(backend="cpu")[0]


def model_device(model: LeNet):
    return model.conv1.kernel[...].device


def build(variant: str = "classic", device: str = "cpu") -> LeNet:
    """The network with Xavier-uniform kernels and zero biases, on the requested device.

    The init keys come from a fixed seed; parity runs overwrite the weights with set_weights.
    The dropout stream is named so that Trainer can reseed it from config.seed.
    """
    target = resolve_device(device)
    model = LeNet(variant, nnx.Rngs(params=0, dropout=0))
    # Committed placement: a jitted call then runs where the weights are, even on a machine
    # whose default device is a GPU.
    nnx.update(model, jax.device_put(nnx.state(model), target))
    return model


def param_count(model) -> int:
    """Counted from the parameter tree (nnx.Param leaves) of a model or one of its layers."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _native_kind(layer) -> str:
    if isinstance(layer, nnx.Module):
        return type(layer).__name__
    return getattr(layer, "func", layer).__name__  # functools.partial wraps the pooling functions


def layer_summary(model: LeNet) -> list[LayerRow]:
    """Push one dummy image through each layer of the real model and record what comes out."""
    x = jax.device_put(to_nhwc(np.zeros((1, *spec.INPUT_SHAPE), np.float32)), model_device(model))
    rows = []
    for layer_name, layer in model.layers():
        x = layer(x)
        native = tuple(x.shape[1:])
        params = param_count(layer) if isinstance(layer, nnx.Module) else 0
        rows.append(LayerRow(layer_name, _native_kind(layer), canonical_shape(native, data_format), native, params))
    return rows

"""Build LeNet from common.spec as a Gluon HybridSequential, and measure its shapes."""

from __future__ import annotations

import mxnet as mx
from mxnet.gluon import nn

from common import spec
from common.interface import DeviceUnavailable, LayerRow, canonical_shape, choose_device

name = "mxnet"
data_format = "NCHW"  # Gluon convolves channels-first by default, the canonical layout: nothing to transpose

# Each block gets prefix "<spec name>_": Gluon then calls it "conv1" and its parameters
# "conv1_weight"/"conv1_bias" instead of counter names like "hybridsequential0_conv0_weight".
_LAYERS = {
    # padding is spelled as a number of pixels, exactly as in the spec
    "conv": lambda h, prefix: nn.Conv2D(
        h["out_channels"], h["kernel_size"], padding=h["padding"], in_channels=h["in_channels"], prefix=prefix
    ),
    # flatten=True (Gluon's default): Dense collapses all but the batch axis itself, row-major over
    # C,H,W (the canonical order), so fc1 takes pool2's (16, 5, 5) output as it is.
    "dense": lambda h, prefix: nn.Dense(h["out_features"], in_units=h["in_features"], flatten=True, prefix=prefix),
    "sigmoid": lambda h, prefix: nn.Activation("sigmoid", prefix=prefix),
    "relu": lambda h, prefix: nn.Activation("relu", prefix=prefix),
    "avg_pool": lambda h, prefix: nn.AvgPool2D(h["size"], h["stride"], prefix=prefix),
    "max_pool": lambda h, prefix: nn.MaxPool2D(h["size"], h["stride"], prefix=prefix),
    "dropout": lambda h, prefix: nn.Dropout(h["rate"], prefix=prefix),
}
# The spec's flatten step has no block here: the Dense after it flattens (see "dense" above).
_DONE_BY_DENSE = "flatten"

# Glorot uniform: bound sqrt(magnitude / ((fan_in + fan_out) / 2)) = sqrt(6 / (fan_in + fan_out)),
# fans including the kernel's receptive field. These equal Xavier()'s defaults, spelled out because
# factor_type and magnitude change the bound (factor_type="in", magnitude=2 is He init). Without an
# init, Gluon's initialize() draws weights from Uniform(-0.07, 0.07); biases are zeros either way.
GLOROT_UNIFORM = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3)


def version() -> str:
    return mx.__version__


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if mx.context.num_gpus() > 0 else [])


def resolve_device(device: str) -> mx.Context:
    if choose_device(device, devices()) == "gpu":
        if mx.context.num_gpus() == 0:
            raise DeviceUnavailable(
                "device='gpu' but MXNet sees no CUDA GPU; use device='cpu', or replace the CPU-only `mxnet` "
                "wheel with a CUDA 11 build such as `pip install mxnet-cu117==1.9.1 numpy==1.23.5`"
            )
        return mx.gpu(0)
    return mx.cpu()


def model_device(model: nn.HybridSequential) -> mx.Context:
    return next(iter(model.collect_params().values())).list_ctx()[0]


def build(variant: str = "classic", device: str = "cpu") -> nn.HybridSequential:
    """The network with Glorot-uniform weights and zero biases, hybridized (compiled) for speed.

    Parity runs then overwrite the weights with the canonical ones (set_weights).
    """
    model = nn.HybridSequential(prefix="lenet_")
    blocks = [_LAYERS[layer.kind](layer.hyper, f"{layer.name}_") for layer in spec.layers(variant) if layer.kind != _DONE_BY_DENSE]
    model.add(*blocks)
    model.initialize(GLOROT_UNIFORM, ctx=resolve_device(device))  # biases keep their bias_initializer="zeros"
    # Hybridized: one cached graph for forward and backward instead of op-by-op Python calls;
    # static_alloc/static_shape keep its memory plan between calls.
    model.hybridize(static_alloc=True, static_shape=True)
    return model


def param_count(model: nn.Block) -> int:
    return sum(param.data().size for param in model.collect_params().values())


def layer_summary(model: nn.HybridSequential) -> list[LayerRow]:
    """Push one dummy image through each block and record what comes out.

    The spec's flatten step is a row of its own, measured with the flatten fc1's Dense applies.
    """
    x = mx.nd.zeros((1, *spec.INPUT_SHAPE), ctx=model_device(model))
    rows = []
    for block in model:
        if isinstance(block, nn.Dense) and x.ndim > 2:
            x = x.flatten()
            rows.append(_row(_DONE_BY_DENSE, f"Dense(flatten=True) in {block.name}", x, 0))
        x = block(x)
        rows.append(_row(block.name, type(block).__name__, x, param_count(block)))
    return rows


def _row(row_name: str, kind: str, x: mx.nd.NDArray, params: int) -> LayerRow:
    native = tuple(x.shape[1:])
    return LayerRow(row_name, kind, canonical_shape(native, data_format), native, params)

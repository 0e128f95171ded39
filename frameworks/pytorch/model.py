"""Build LeNet from common.spec as a torch.nn.Sequential, and measure its shapes."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from common import spec
from common.interface import DeviceUnavailable, LayerRow, canonical_shape, choose_device

# On Ampere and newer GPUs cuDNN runs float32 convolutions in TF32 by default (10 mantissa bits,
# about 1e-3 relative error), which breaks parity with the float64 oracle at 1e-5. "ieee" keeps
# true float32 for convolutions and matmuls, as TensorFlow, JAX and MXNet are told too. PyTorch's
# new per-backend API, not the legacy allow_tf32 flags: mixing the two raises an error. No effect on CPU.
torch.backends.cudnn.conv.fp32_precision = "ieee"
torch.backends.cuda.matmul.fp32_precision = "ieee"

name = "pytorch"
data_format = "NCHW"  # PyTorch convolves channels-first, the canonical layout: nothing to transpose

_LAYERS = {
    # padding is spelled as a number of pixels, exactly as in the spec
    "conv": lambda h: nn.Conv2d(h["in_channels"], h["out_channels"], h["kernel_size"], padding=h["padding"]),
    "dense": lambda h: nn.Linear(h["in_features"], h["out_features"]),
    "sigmoid": lambda h: nn.Sigmoid(),
    "relu": lambda h: nn.ReLU(),
    "avg_pool": lambda h: nn.AvgPool2d(h["size"], h["stride"]),
    "max_pool": lambda h: nn.MaxPool2d(h["size"], h["stride"]),
    "flatten": lambda h: nn.Flatten(),  # flattens C,H,W: the canonical order
    "dropout": lambda h: nn.Dropout(h["rate"]),
}


def version() -> str:
    return torch.__version__


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


def resolve_device(device: str) -> torch.device:
    if choose_device(device, devices()) == "gpu":
        if not torch.cuda.is_available():
            raise DeviceUnavailable("device='gpu' but PyTorch sees no CUDA GPU; use device='cpu' or install a CUDA build of torch")
        return torch.device("cuda")
    return torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def build(variant: str = "classic", device: str = "cpu") -> nn.Sequential:
    """The network with Xavier-uniform weights and zero biases.

    PyTorch's own default is Kaiming-uniform weights and nonzero biases, so the init is explicit.
    Parity runs then overwrite it with the canonical weights (set_weights).
    """
    model = nn.Sequential(OrderedDict((layer.name, _LAYERS[layer.kind](layer.hyper)) for layer in spec.layers(variant)))
    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    # channels_last stores the conv kernels (and so every activation computed from them) as N,H,W,C
    # in memory; indexing and shapes stay N,C,H,W. oneDNN's CPU convolutions take that layout
    # directly, while N,C,H,W input is reordered to a blocked layout and back around every conv
    # (the gain is in README, "Speed").
    return model.to(resolve_device(device), memory_format=torch.channels_last)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def layer_summary(model: nn.Sequential) -> list[LayerRow]:
    """Push one dummy image through each child module and record what comes out."""
    x = torch.zeros((1, *spec.INPUT_SHAPE), device=model_device(model))
    rows = []
    for layer_name, module in model.named_children():
        x = module(x)
        native = tuple(x.shape[1:])
        rows.append(LayerRow(layer_name, type(module).__name__, canonical_shape(native, data_format), native, param_count(module)))
    return rows

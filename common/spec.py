"""LeNet-5 as data: the one description every framework builds from.

Shapes are per example in canonical C,H,W order, whatever layout a framework uses inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

VARIANTS = ("classic", "modern")
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class Layer:
    """One step of the network.

    kind is one of: conv, dense, sigmoid, relu, avg_pool, max_pool, flatten, dropout.
    hyper holds the kind's hyperparameters (conv: in_channels, out_channels, kernel_size,
    padding; dense: in_features, out_features; pools: size, stride; dropout: rate).
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    hyper: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "hyper", MappingProxyType(dict(self.hyper)))

    @property
    def param_count(self) -> int:
        h = self.hyper
        if self.kind == "conv":
            return h["out_channels"] * (h["in_channels"] * h["kernel_size"] ** 2 + 1)
        if self.kind == "dense":
            return h["out_features"] * (h["in_features"] + 1)
        return 0

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical tensor shapes (PyTorch's layout: OIHW kernels, (out, in) matrices)."""
        h = self.hyper
        if self.kind == "conv":
            k = h["kernel_size"]
            return {
                f"{self.name}.weight": (h["out_channels"], h["in_channels"], k, k),
                f"{self.name}.bias": (h["out_channels"],),
            }
        if self.kind == "dense":
            return {
                f"{self.name}.weight": (h["out_features"], h["in_features"]),
                f"{self.name}.bias": (h["out_features"],),
            }
        return {}


def _conv(name, in_channels, out_channels, padding, output_shape):
    hyper = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=5, padding=padding)
    return Layer(name, "conv", output_shape, hyper)


def _dense(name, in_features, out_features):
    return Layer(name, "dense", (out_features,), dict(in_features=in_features, out_features=out_features))


def layers(variant: str = "classic") -> tuple[Layer, ...]:
    """The layers of one variant, in order.

    classic: d2l's LeNet-5 (sigmoid, average pooling).
    modern: the same shapes with ReLU, max pooling and dropout 0.5 after fc1's activation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    act = "sigmoid" if variant == "classic" else "relu"
    pool = dict(kind="avg_pool" if variant == "classic" else "max_pool", hyper=dict(size=2, stride=2))
    net = [
        _conv("conv1", 1, 6, padding=2, output_shape=(6, 28, 28)),
        Layer("act1", act, (6, 28, 28)),
        Layer("pool1", output_shape=(6, 14, 14), **pool),
        _conv("conv2", 6, 16, padding=0, output_shape=(16, 10, 10)),
        Layer("act2", act, (16, 10, 10)),
        Layer("pool2", output_shape=(16, 5, 5), **pool),
        Layer("flatten", "flatten", (400,)),
        _dense("fc1", 400, 120),
        Layer("act3", act, (120,)),
    ]
    if variant == "modern":
        net.append(Layer("dropout", "dropout", (120,), dict(rate=0.5)))
    net += [
        _dense("fc2", 120, 84),
        Layer("act4", act, (84,)),
        _dense("fc3", 84, NUM_CLASSES),
    ]
    return tuple(net)


def param_shapes(variant: str = "classic") -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name and shape, in layer order."""
    return {name: shape for layer in layers(variant) for name, shape in layer.param_shapes.items()}


def flattened_inputs(variant: str = "classic") -> dict[str, tuple[int, ...]]:
    """Each dense layer that reads a flatten, with the C,H,W shape that flatten unrolls: {"fc1": (16, 5, 5)}."""
    net = layers(variant)
    return {after.name: before.output_shape for before, flat, after in zip(net, net[1:], net[2:]) if flat.kind == "flatten"}


def param_layers(variant: str = "classic") -> tuple[Layer, ...]:
    """The layers that hold parameters (conv and dense), in order: what every weight converter walks."""
    return tuple(layer for layer in layers(variant) if layer.param_count)


def padding_name(hyper: Mapping[str, float]) -> str:
    """A conv's padding in pixels, spelled as Keras and Flax spell it: "same" or "valid".

    "valid" pads nothing. "same" keeps H,W; at stride 1 that pads (k - 1) / 2 pixels on each side,
    a whole number only for odd k, so it equals the spec's padding 2 only because LeNet's kernels
    are 5x5. Any other padding has no name, and an even kernel's "same" would pad unevenly (one
    pixel more on one side) where PyTorch and Gluon pad evenly: both are refused here.
    """
    padding, kernel = hyper["padding"], hyper["kernel_size"]
    if padding == 0:
        return "valid"
    if kernel % 2 == 1 and 2 * padding == kernel - 1:
        return "same"
    raise ValueError(f"padding {padding} for a {kernel}x{kernel} kernel is neither 'same' nor 'valid'")


def param_count(variant: str = "classic") -> int:
    return sum(layer.param_count for layer in layers(variant))

"""Build LeNet from common.spec as a keras.Sequential, and measure its shapes."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common import spec
from common.interface import DeviceUnavailable, LayerRow, canonical_shape, choose_device

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"Keras was imported with the {keras.backend.backend()!r} backend before frameworks.tensorflow; "
        "import frameworks.tensorflow first or set KERAS_BACKEND=tensorflow"
    )

# TensorFlow runs float32 matmuls and convolutions in TF32 on Ampere and newer GPUs by default,
# which keeps only 10 mantissa bits; parity with the float64 reference needs true float32.
tf.config.experimental.enable_tensor_float_32_execution(False)

name = "tensorflow"
data_format = "NHWC"  # Keras convolves channels-last by default, the layout TensorFlow's CPU convolutions are written for


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """Canonical N,C,H,W -> Keras's N,H,W,C: the one transpose at the interface boundary."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def _dummy_batch() -> np.ndarray:
    """One all-zero image in Keras's layout: fixes the model's input shape and feeds layer_summary."""
    return to_nhwc(np.zeros((1, *spec.INPUT_SHAPE), np.float32))


# Keras's defaults already are Glorot-uniform kernels and zero biases (PyTorch's are not);
# they are spelled out so that a change of Keras default cannot change the network.
_INIT = dict(kernel_initializer="glorot_uniform", bias_initializer="zeros")

_LAYERS = {
    # Keras names its padding ("same", "valid") instead of counting pixels: see spec.padding_name
    "conv": lambda h, name: keras.layers.Conv2D(h["out_channels"], h["kernel_size"], padding=spec.padding_name(h), name=name, **_INIT),
    "dense": lambda h, name: keras.layers.Dense(h["out_features"], name=name, **_INIT),
    "sigmoid": lambda h, name: keras.layers.Activation("sigmoid", name=name),
    "relu": lambda h, name: keras.layers.Activation("relu", name=name),
    "avg_pool": lambda h, name: keras.layers.AveragePooling2D(h["size"], h["stride"], name=name),
    "max_pool": lambda h, name: keras.layers.MaxPooling2D(h["size"], h["stride"], name=name),
    # flattens H,W,C, not the canonical C,H,W: convert.py reorders fc1's inputs to match
    "flatten": lambda h, name: keras.layers.Flatten(name=name),
    "dropout": lambda h, name: keras.layers.Dropout(h["rate"], name=name),
}


def version() -> str:
    return f"{tf.__version__} (keras {keras.__version__})"


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])


def resolve_device(device: str) -> str:
    if choose_device(device, devices()) == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise DeviceUnavailable(
                "device='gpu' but TensorFlow sees no GPU; use device='cpu', or replace tensorflow-cpu with "
                "TensorFlow's CUDA build, tensorflow 2.21.0 with its and-cuda extra: "
                "pip uninstall tensorflow-cpu && pip install 'tensorflow[and-cuda]==2.21.0'"
            )
        return "/GPU:0"
    return "/CPU:0"


def model_device(model: keras.Model) -> str:
    """The device the model's variables live on; its computations are placed there too."""
    return model.weights[0].value.device


def build(variant: str = "classic", device: str = "cpu") -> keras.Sequential:
    """The network with Glorot-uniform kernels and zero biases, its variables on `device`.

    Parity runs then overwrite them with the canonical weights (set_weights).
    """
    with tf.device(resolve_device(device)):
        return keras.Sequential(
            [keras.Input(_dummy_batch().shape[1:])]
            + [_LAYERS[layer.kind](layer.hyper, layer.name) for layer in spec.layers(variant)],
            name=f"lenet_{variant}",
        )


def param_count(model: keras.Model) -> int:
    return model.count_params()


def layer_summary(model: keras.Sequential) -> list[LayerRow]:
    """Push one dummy image through each layer (dropout off) and record what comes out."""
    with tf.device(model_device(model)):
        x = tf.constant(_dummy_batch())
        rows = []
        for layer in model.layers:
            x = layer(x, training=False)
            native = tuple(x.shape[1:])
            shape = canonical_shape(native, data_format)
            rows.append(LayerRow(layer.name, type(layer).__name__, shape, native, layer.count_params()))
    return rows

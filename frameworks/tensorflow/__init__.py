"""LeNet-5 in Keras 3 on TensorFlow: NHWC activations, HWIO conv kernels, (in, out) dense kernels."""

import os

from common.runtime import tune_process

tune_process("tensorflow")  # thread and allocator settings, read when tensorflow loads (common/runtime.py)

# Keras 3 runs on several backends and picks one from $KERAS_BACKEND (or ~/.keras/keras.json) at
# its first import; this backend is the TensorFlow one.
os.environ["KERAS_BACKEND"] = "tensorflow"

from frameworks.tensorflow.convert import get_weights, set_weights  # noqa: E402
from frameworks.tensorflow.model import build, data_format, devices, layer_summary, name, param_count, version  # noqa: E402
from frameworks.tensorflow.train import evaluate, forward, loss_and_grads, make_trainer, train  # noqa: E402

__all__ = [
    "name", "data_format", "version", "devices", "build", "layer_summary", "param_count",
    "get_weights", "set_weights", "forward", "loss_and_grads", "evaluate", "make_trainer", "train",
]

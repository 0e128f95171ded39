"""LeNet-5 in Keras 3 on TensorFlow: NHWC activations, HWIO conv kernels, (in, out) dense kernels."""

import os

from common.runtime import tune_process

tune_process("tensorflow")  # thread and allocator settings, read when tensorflow loads (common/runtime.py)

# Keras 3 runs on several backends and picks one from $KERAS_BACKEND (or ~/.keras/keras.json) at
# its first import; this backend is the TensorFlow one.
os.environ["KERAS_BACKEND"] = "tensorflow"

from common.training import default_functions  # noqa: E402
from frameworks.tensorflow.convert import get_weights, set_weights  # noqa: E402
from frameworks.tensorflow.model import (  # noqa: E402
    build, data_format, devices, layer_summary, model_device, name, param_count, resolve_device, version,
)
from frameworks.tensorflow.train import Trainer, cross_entropy, forward, loss_and_grads, make_optimizer  # noqa: E402

evaluate, make_trainer, train = default_functions(forward, Trainer)

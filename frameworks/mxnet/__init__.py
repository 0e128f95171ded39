"""LeNet-5 in MXNet Gluon 1.9.1: NCHW like PyTorch, so the canonical layout needs no transposes.

MXNet is retired; 1.9.1 runs on Python 3.11 only with numpy<1.24 (see requirements/mxnet.txt).
"""

import os

from common.runtime import tune_process

tune_process("mxnet")  # thread and allocator settings, read when mxnet loads (common/runtime.py)

# float32 means float32: cuDNN 8 convolves float32 in TF32 on Ampere and newer GPUs unless this
# NVIDIA switch is off. It is read when CUDA starts, so before mxnet is imported; the CPU build ignores it.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

try:
    import mxnet  # noqa: F401
except AttributeError as err:  # numpy 1.24 removed np.bool and numpy 2 more aliases that mxnet 1.9.1 reads at import
    import numpy

    raise ImportError(
        f"mxnet 1.9.1 does not import with numpy {numpy.__version__}; it needs numpy<1.24 "
        f"({str(err).splitlines()[0]})"
    ) from err

from common.training import default_functions  # noqa: E402
from frameworks.mxnet.convert import get_weights, set_weights  # noqa: E402
from frameworks.mxnet.model import (  # noqa: E402
    build, data_format, devices, layer_summary, model_device, name, param_count, resolve_device, version,
)
from frameworks.mxnet.train import Trainer, cross_entropy, forward, loss_and_grads, make_optimizer  # noqa: E402

evaluate, make_trainer, train = default_functions(forward, Trainer)

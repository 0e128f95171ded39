"""LeNet-5 in PyTorch: the reference layout (NCHW, OIHW kernels, (out, in) matrices)."""

from common.runtime import tune_process

tune_process("pytorch")  # thread and allocator settings, read when torch loads (common/runtime.py)

from common.training import default_functions  # noqa: E402
from frameworks.pytorch.convert import get_weights, set_weights  # noqa: E402
from frameworks.pytorch.model import (  # noqa: E402
    build, data_format, devices, layer_summary, model_device, name, param_count, resolve_device, version,
)
from frameworks.pytorch.train import Trainer, cross_entropy, forward, loss_and_grads, make_optimizer  # noqa: E402

evaluate, make_trainer, train = default_functions(forward, Trainer)

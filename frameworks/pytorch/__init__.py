"""LeNet-5 in PyTorch: the reference layout (NCHW, OIHW kernels, (out, in) matrices)."""

from common.runtime import tune_process

tune_process("pytorch")  # thread and allocator settings, read when torch loads (common/runtime.py)

from frameworks.pytorch.convert import get_weights, set_weights  # noqa: E402
from frameworks.pytorch.model import build, data_format, devices, layer_summary, name, param_count, version  # noqa: E402
from frameworks.pytorch.train import evaluate, forward, loss_and_grads, make_trainer, train  # noqa: E402

__all__ = [
    "name", "data_format", "version", "devices", "build", "layer_summary", "param_count",
    "get_weights", "set_weights", "forward", "loss_and_grads", "evaluate", "make_trainer", "train",
]

"""LeNet-5 in plain float64 NumPy: the oracle (common/reference.py) as a fifth backend.

No framework at all: every layer's forward and backward rule is written out by hand, so its
column in a comparison is the math itself. CPU only and slow (float64, no fused kernels), so it is
opt-in: `compare.py --frameworks numpy pytorch ...`. The harness's own tests run on it.
"""

from common.training import default_functions
from frameworks.numpy.convert import get_weights, set_weights
from frameworks.numpy.model import (
    build, data_format, devices, layer_summary, model_device, name, param_count, resolve_device, version,
)
from frameworks.numpy.train import Trainer, cross_entropy, forward, loss_and_grads, make_optimizer

evaluate, make_trainer, train = default_functions(forward, Trainer)

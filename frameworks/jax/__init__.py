"""LeNet-5 in JAX with Flax NNX and optax: NHWC activations, HWIO kernels, (in, out) matrices.

Flax has two module APIs. d2l and much older material use Linen (flax.linen): modules are
stateless descriptions, and parameters live in a separate dict returned by `model.init` and
passed to every `model.apply`. This backend uses NNX (flax.nnx), which the Flax docs recommend
for new code: modules hold their own parameters like PyTorch's, so `build` returns one object
that set_weights can change in place. The numbers are the same either way.
"""

from common.runtime import tune_process

tune_process("jax")  # thread and allocator settings, read when jax loads (common/runtime.py)

from frameworks.jax.convert import get_weights, set_weights  # noqa: E402
from frameworks.jax.model import build, data_format, devices, layer_summary, name, param_count, version  # noqa: E402
from frameworks.jax.train import evaluate, forward, loss_and_grads, make_trainer, train  # noqa: E402

__all__ = [
    "name", "data_format", "version", "devices", "build", "layer_summary", "param_count",
    "get_weights", "set_weights", "forward", "loss_and_grads", "evaluate", "make_trainer", "train",
]

"""LeNet-5 in JAX with Flax NNX and optax: NHWC activations, HWIO kernels, (in, out) matrices.

Flax has two module APIs. d2l and much older material use Linen (flax.linen): modules are
stateless descriptions, and parameters live in a separate dict returned by `model.init` and
passed to every `model.apply`. This backend uses NNX (flax.nnx), which the Flax docs recommend
for new code: modules hold their own parameters like PyTorch's, so `build` returns one object
that set_weights can change in place. The numbers are the same either way.
"""

from common.runtime import tune_process

tune_process("jax")  # thread and allocator settings, read when jax loads (common/runtime.py)

from common.training import default_functions  # noqa: E402
from frameworks.jax.convert import get_weights, set_weights  # noqa: E402
from frameworks.jax.model import (  # noqa: E402
    build, data_format, devices, layer_summary, model_device, name, param_count, resolve_device, version,
)
from frameworks.jax.train import Trainer, cross_entropy, forward, loss_and_grads, make_optimizer  # noqa: E402

evaluate, make_trainer, train = default_functions(forward, Trainer)

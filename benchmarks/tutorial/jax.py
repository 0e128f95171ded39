"""The Flax tutorial way: an nnx.jit step per batch, each batch fed from NumPy, the loss read every batch."""

import numpy as np
import optax
from flax import nnx

from common.data import scale_images
from frameworks.jax.model import to_nhwc


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train_epoch(model, data, config, max_batches=None) -> int:
    optimizer = nnx.Optimizer(model, optax.sgd(config.lr), wrt=nnx.Param)
    order = np.random.default_rng(config.seed).permutation(len(data.train_labels))
    seen = 0
    for batch, start in enumerate(range(0, len(order), config.batch_size)):
        if batch == max_batches:
            break
        indices = order[start : start + config.batch_size]
        float(train_step(model, optimizer, to_nhwc(scale_images(data.train_images[indices])), data.train_labels[indices]))
        seen += len(indices)
    return seen

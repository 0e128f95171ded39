"""The Flax tutorial way: an nnx.jit step per batch, each batch fed from NumPy, the loss read every batch."""

import optax
from flax import nnx

from common.data import batch_order, scale_images
from frameworks.jax.model import to_nhwc


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train_epoch(model, data, config, max_batches=None) -> None:
    optimizer = nnx.Optimizer(model, optax.sgd(config.lr), wrt=nnx.Param)
    for indices in batch_order(len(data.train_labels), config.batch_size, config.seed, epoch=0)[:max_batches]:
        float(train_step(model, optimizer, to_nhwc(scale_images(data.train_images[indices])), data.train_labels[indices]))

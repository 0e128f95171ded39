"""Forward, loss, gradients, the optimizer and the training step in MXNet Gluon."""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from common import interface
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.mxnet.convert import canonical_params
from frameworks.mxnet.model import model_device

# Softmax cross-entropy of logits against integer labels, one value per example: Gluon losses do
# not reduce over the batch. from_logits=False means "these are raw logits, apply log-softmax".
per_example_cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=True, from_logits=False)


def cross_entropy(logits: mx.nd.NDArray, labels: mx.nd.NDArray) -> mx.nd.NDArray:
    """The batch's mean. Training backpropagates the per-example losses instead (see Trainer.reduce)."""
    return per_example_cross_entropy(logits, labels).mean()


def _to_device(model, x: np.ndarray) -> mx.nd.NDArray:
    return mx.nd.array(np.ascontiguousarray(x, np.float32), ctx=model_device(model), dtype="float32")


def forward(model, x: np.ndarray) -> np.ndarray:
    # Outside autograd.record(train_mode=True) Gluon runs in predict mode: dropout off.
    return model(_to_device(model, x)).asnumpy()


def loss_and_grads(model, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    """Eval-mode gradients, recorded in train mode with the dropout blocks left out.

    Dropout is the only block here that differs between modes, and it is the identity in eval
    mode. Recording in predict mode instead (autograd.record(train_mode=False)) gives wrong
    max-pool gradients on CPU: MXNet's MKL-DNN pooling keeps no argmax in predict mode.
    """
    labels = mx.nd.array(y, ctx=model_device(model), dtype="float32")
    with autograd.record():
        logits = _to_device(model, x)
        for block in model:
            if not isinstance(block, nn.Dropout):
                logits = block(logits)
        loss = cross_entropy(logits, labels)
    loss.backward()  # grad_req="write": each backward overwrites the gradients, nothing to zero
    return float(loss.asscalar()), {key: param.grad().asnumpy() for key, param in canonical_params(model).items()}


def make_optimizer(model, config: TrainConfig, kvstore=None, update_on_kvstore=None) -> gluon.Trainer:
    """A gluon.Trainer applying the optimizer to every parameter. One device needs no kvstore; data
    parallelism passes one, and update_on_kvstore=False (frameworks/mxnet/distributed.py says why)."""
    return gluon.Trainer(model.collect_params(), _optimizer(config), kvstore=kvstore, update_on_kvstore=update_on_kvstore)


def _optimizer(config: TrainConfig) -> mx.optimizer.Optimizer:
    if config.optimizer == "sgd":
        return mx.optimizer.SGD(learning_rate=config.lr, momentum=0.0, wd=0.0)
    # MXNet (like Keras) folds Adam's bias correction into the learning rate, so eps is added to
    # sqrt(v), not to PyTorch's sqrt(v / (1 - beta2^t)): in PyTorch's terms MXNet's eps is
    # eps / sqrt(1 - beta2^t), 3e-7 at step 1. Small, but it shows in the losses from step 2 on.
    return mx.optimizer.Adam(learning_rate=config.lr, beta1=config.beta1, beta2=config.beta2, epsilon=config.eps, wd=0.0)


def training_set_on(context: mx.Context, data) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """The training images as uint8 N,1,28,28 and the labels, placed on a device for gather_batch."""
    images = mx.nd.array(data.train_images[:, None], ctx=context, dtype="uint8")
    labels = mx.nd.array(data.train_labels, ctx=context, dtype="float32")  # argmax gives float32 indices
    return images, labels


def gather_batch(images: mx.nd.NDArray, labels: mx.nd.NDArray, batch_indices: np.ndarray) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """The examples at batch_indices, scaled to float32 in [0, 1], on the device that holds the training set."""
    index = mx.nd.array(batch_indices, ctx=images.context, dtype="int64")
    return images.take(index).astype("float32") / 255, labels.take(index)


class Trainer(interface.Trainer):
    """The training set lives on the model's device as uint8; each step gathers and scales a batch.

    The step's two documented hooks, which a subclass replaces (data parallelism, and the mistakes
    frameworks/mxnet/pitfalls.py measures): `loss`, the per-example losses, and `reduce`, what is
    back-propagated from them and what step(n) divides the gradient by.
    """

    loss = per_example_cross_entropy

    def __init__(self, model, data, config: TrainConfig, optimizer: gluon.Trainer | None = None):
        """optimizer: a gluon.Trainer already made for the model (data parallelism brings its
        kvstore's); by default make_optimizer's."""
        self.model = model
        mx.random.seed(config.seed)  # dropout masks (modern variant) come from MXNet's global generators
        self.context = model_device(model)
        self.images, self.labels = training_set_on(self.context, data)
        self.optimizer = optimizer or make_optimizer(model, config)
        # Running totals stay on the device: reading them every step would wait on it every step.
        self.loss_sum = mx.nd.zeros((1,), ctx=self.context)
        self.correct = mx.nd.zeros((1,), ctx=self.context)

    def reduce(self, losses: mx.nd.NDArray, global_batch_size: int) -> tuple[mx.nd.NDArray, int]:
        """(what backward() differentiates, the n of step(n)). backward() of the per-example losses
        gives the gradient of their SUM, and step(n) scales the gradients by 1/n: with n = the
        GLOBAL batch's length that is the gradient of the global batch's mean loss, the last,
        partial batch included (a kvstore first sums the shards' gradients)."""
        return losses, global_batch_size

    def update(self, shards: list[tuple[mx.nd.NDArray, mx.nd.NDArray, np.ndarray, float]], global_batch_size: int) -> list[tuple]:
        """One optimizer step from shards of a global batch of global_batch_size examples: (images,
        labels, batch_indices, weight) per context of the model (one on a device), the losses
        multiplied by weight. Returns each shard's (weighted per-example losses, logits, labels)."""
        outputs, heads = [], []
        with autograd.record():  # train mode: dropout on
            for images, labels, batch_indices, weight in shards:
                x, y = gather_batch(images, labels, batch_indices)
                logits = self.model(x)
                losses = self.loss(logits, y) * weight
                head, step_size = self.reduce(losses, global_batch_size)
                outputs.append((losses, logits, y))
                heads.append(head)
        autograd.backward(heads)
        self.optimizer.step(step_size)
        return outputs

    def step(self, batch_indices: np.ndarray) -> mx.np.ndarray:
        [(losses, logits, y)] = self.update([(self.images, self.labels, batch_indices, 1.0)], len(batch_indices))
        self.loss_sum += losses.sum()
        self.correct += (logits.argmax(axis=1) == y).sum()
        return losses.mean().as_np_ndarray()  # the same memory, seen as an array that float() accepts

    def epoch_totals(self) -> tuple[float, int]:
        # Gluon updates the parameters in place: the model already holds the current weights.
        totals = float(self.loss_sum.asscalar()), round(self.correct.asscalar())
        self.loss_sum[:] = 0
        self.correct[:] = 0
        return totals

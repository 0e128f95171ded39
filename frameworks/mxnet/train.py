"""Forward, gradients, evaluation and the training step in MXNet Gluon."""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from common import training
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.mxnet.convert import canonical_params
from frameworks.mxnet.model import model_context

# Softmax cross-entropy of logits against integer labels, one value per example (not reduced).
_CROSS_ENTROPY = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=True, from_logits=False)


def _to_device(model, x: np.ndarray) -> mx.nd.NDArray:
    return mx.nd.array(np.ascontiguousarray(x, np.float32), ctx=model_context(model), dtype="float32")


def forward(model, x: np.ndarray) -> np.ndarray:
    # Outside autograd.record(train_mode=True) Gluon runs in predict mode: dropout off.
    return model(_to_device(model, x)).asnumpy()


def loss_and_grads(model, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    """Eval-mode gradients, recorded in train mode with the dropout blocks left out.

    Dropout is the only block here that differs between modes, and it is the identity in eval
    mode. Recording in predict mode instead (autograd.record(train_mode=False)) gives wrong
    max-pool gradients on CPU: MXNet's MKL-DNN pooling keeps no argmax in predict mode.
    """
    labels = mx.nd.array(y, ctx=model_context(model), dtype="float32")
    with autograd.record():
        logits = _to_device(model, x)
        for block in model:
            if not isinstance(block, nn.Dropout):
                logits = block(logits)
        loss = _CROSS_ENTROPY(logits, labels).mean()
    loss.backward()  # grad_req="write": each backward overwrites the gradients, nothing to zero
    return float(loss.asscalar()), {key: param.grad().asnumpy() for key, param in canonical_params(model).items()}


def evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return training.evaluate_with(lambda chunk: forward(model, chunk), x, y)


def make_optimizer(config: TrainConfig) -> mx.optimizer.Optimizer:
    if config.optimizer == "sgd":
        return mx.optimizer.SGD(learning_rate=config.lr, momentum=0.0, wd=0.0)
    # MXNet (like Keras) folds Adam's bias correction into the learning rate, so eps is added to
    # sqrt(v), not to PyTorch's sqrt(v / (1 - beta2^t)): in PyTorch's terms MXNet's eps is
    # eps / sqrt(1 - beta2^t), 3e-7 at step 1. Small, but it shows in the losses from step 2 on.
    return mx.optimizer.Adam(learning_rate=config.lr, beta1=config.beta1, beta2=config.beta2, epsilon=config.eps, wd=0.0)


class Trainer:
    """The training set lives on the model's device as uint8; each step gathers and scales a batch."""

    def __init__(self, model, data, config: TrainConfig):
        self.model = model
        mx.random.seed(config.seed)  # dropout masks (modern variant) come from MXNet's global generators
        self.context = model_context(model)
        self.images = mx.nd.array(data.train_images[:, None], ctx=self.context, dtype="uint8")  # N,1,28,28
        self.labels = mx.nd.array(data.train_labels, ctx=self.context, dtype="float32")  # argmax gives float32 indices
        # gluon.Trainer applies the optimizer to every parameter; one device needs no kvstore.
        self.optimizer = gluon.Trainer(model.collect_params(), make_optimizer(config), kvstore=None)
        # Running totals stay on the device: reading them every step would wait on it every step.
        self.loss_sum = mx.nd.zeros((1,), ctx=self.context)
        self.correct = mx.nd.zeros((1,), ctx=self.context)

    def step(self, batch_indices: np.ndarray) -> mx.np.ndarray:
        index = mx.nd.array(batch_indices, ctx=self.context, dtype="int64")
        x = self.images.take(index).astype("float32") / 255
        y = self.labels.take(index)
        with autograd.record():  # train mode: dropout on
            logits = self.model(x)
            losses = _CROSS_ENTROPY(logits, y)
        # backward() of the per-example losses gives the gradient of their SUM, and step(n) scales
        # gradients by 1/n: with n = this batch's length that is the gradient of the batch's mean
        # loss, the last, partial batch included.
        losses.backward()
        self.optimizer.step(len(batch_indices))
        self.loss_sum += losses.sum()
        self.correct += (logits.argmax(axis=1) == y).sum()
        return losses.mean().as_np_ndarray()  # the same memory, seen as an array that float() accepts

    def epoch_totals(self) -> tuple[float, int]:
        # Gluon updates the parameters in place: the model already holds the current weights.
        totals = float(self.loss_sum.asscalar()), int(self.correct.asscalar())
        self.loss_sum[:] = 0
        self.correct[:] = 0
        return totals


def make_trainer(model, data, config: TrainConfig) -> Trainer:
    return Trainer(model, data, config)


def train(model, data, config: TrainConfig, on_epoch=None, on_batch=None) -> list[dict]:
    return training.fit(make_trainer(model, data, config), lambda x, y: evaluate(model, x, y), data, config, on_epoch, on_batch)

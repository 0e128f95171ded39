"""Forward, loss, gradients, the optimizers and the training step, in float64 NumPy."""

from __future__ import annotations

import numpy as np

from common import interface, reference, spec
from common.data import scale_images
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.numpy.model import LeNet

cross_entropy = reference.cross_entropy  # mean softmax cross-entropy of raw logits, in float64


def forward(model: LeNet, x: np.ndarray) -> np.ndarray:
    return reference.forward(model.params, x, model.variant).astype(np.float32)


def loss_and_grads(model: LeNet, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    loss, grads = reference.loss_and_grads(model.params, x, y, model.variant)
    return loss, {key: g.astype(np.float32) for key, g in grads.items()}


class SGD:
    """Plain SGD: w <- w - lr * g."""

    def __init__(self, lr: float):
        self.lr = lr

    def update(self, params: dict, grads: dict) -> dict:
        return {key: w - self.lr * grads[key] for key, w in params.items()}


class Adam:
    """Adam as PyTorch and optax write it: eps is added after the bias correction."""

    def __init__(self, lr: float, beta1: float, beta2: float, eps: float):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t, self.m, self.v = 0, None, None

    def update(self, params: dict, grads: dict) -> dict:
        if self.m is None:
            self.m = {key: np.zeros_like(w) for key, w in params.items()}
            self.v = {key: np.zeros_like(w) for key, w in params.items()}
        self.t += 1
        updated = {}
        for key, w in params.items():
            self.m[key] = self.beta1 * self.m[key] + (1 - self.beta1) * grads[key]
            self.v[key] = self.beta2 * self.v[key] + (1 - self.beta2) * grads[key] ** 2
            m_hat = self.m[key] / (1 - self.beta1**self.t)
            v_hat = self.v[key] / (1 - self.beta2**self.t)
            updated[key] = w - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return updated


def make_optimizer(model: LeNet, config: TrainConfig) -> SGD | Adam:
    if config.optimizer == "sgd":
        return SGD(config.lr)
    return Adam(config.lr, config.beta1, config.beta2, config.eps)


class Trainer(interface.Trainer):
    """Each step gathers and scales a batch, then runs the oracle's forward and backward pass."""

    def __init__(self, model: LeNet, data, config: TrainConfig):
        self.model, self.data = model, data
        self.optimizer = make_optimizer(model, config)
        self.dropout_layers = [layer for layer in spec.layers(model.variant) if layer.kind == "dropout"]
        self.rng = np.random.default_rng(config.seed)  # dropout masks come from config.seed, nothing else
        self.loss_sum, self.correct = 0.0, 0

    def _dropout_masks(self, batch_size: int) -> dict[str, np.ndarray]:
        """Inverted dropout: keep each unit with probability 1 - rate and scale it by 1 / (1 - rate)."""
        return {
            layer.name: (self.rng.random((batch_size, *layer.output_shape)) >= layer.hyper["rate"]) / (1 - layer.hyper["rate"])
            for layer in self.dropout_layers
        }

    def step(self, batch_indices: np.ndarray) -> float:
        x = scale_images(self.data.train_images[batch_indices])
        y = self.data.train_labels[batch_indices]
        logits, loss, grads = reference.forward_backward(self.model.params, x, y, self.model.variant, self._dropout_masks(len(y)))
        self.model.params = self.optimizer.update(self.model.params, grads)
        self.loss_sum += loss * len(y)
        self.correct += int((logits.argmax(axis=1) == y).sum())
        return loss

    def epoch_totals(self) -> tuple[float, int]:
        totals = self.loss_sum, self.correct
        self.loss_sum, self.correct = 0.0, 0
        return totals

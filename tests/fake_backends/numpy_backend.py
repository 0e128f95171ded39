"""A complete backend made of common.reference, for testing the harness without any framework.

The harness cannot tell it from a real one; the broken variants beside it derive from it.
"""

from __future__ import annotations

import numpy as np

from common import reference, spec, training
from common.data import scale_images
from common.interface import LayerRow
from common.weights import check_weights, init_weights

name = "numpy"
data_format = "NCHW"


class Model:
    def __init__(self, variant: str):
        self.variant = variant
        self.weights = init_weights(0, variant)


def version() -> str:
    return np.__version__


def devices() -> list[str]:
    return ["cpu"]


def build(variant: str = "classic", device: str = "cpu") -> Model:
    return Model(variant)


def layer_summary(model: Model) -> list[LayerRow]:
    return [LayerRow(layer.name, layer.kind, layer.output_shape, layer.output_shape, layer.param_count) for layer in spec.layers(model.variant)]


def param_count(model: Model) -> int:
    return sum(w.size for w in model.weights.values())


def get_weights(model: Model):
    return {k: v.copy() for k, v in model.weights.items()}


def set_weights(model: Model, weights) -> None:
    model.weights = {k: v.copy() for k, v in check_weights(weights).items()}


def forward(model: Model, x):
    return reference.forward(model.weights, x, model.variant).astype(np.float32)


def loss_and_grads(model: Model, x, y):
    loss, grads = reference.loss_and_grads(model.weights, x, y, model.variant)
    return loss, {k: g.astype(np.float32) for k, g in grads.items()}


def evaluate(model: Model, x, y):
    return training.evaluate_with(lambda chunk: forward(model, chunk), x, y)


class Trainer:
    """Plain SGD in float64 (the modern variant trains without dropout here)."""

    def __init__(self, model: Model, data, config):
        self.model, self.data, self.lr = model, data, config.lr
        self.loss_sum, self.correct = 0.0, 0

    def step(self, batch_indices):
        x = scale_images(self.data.train_images[batch_indices])
        y = self.data.train_labels[batch_indices]
        logits = reference.forward(self.model.weights, x, self.model.variant)
        loss, grads = reference.loss_and_grads(self.model.weights, x, y, self.model.variant)
        self.model.weights = {k: (w - self.lr * grads[k]).astype(np.float32) for k, w in self.model.weights.items()}
        self.loss_sum += loss * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        return loss

    def epoch_totals(self):
        totals = self.loss_sum, self.correct
        self.loss_sum, self.correct = 0.0, 0
        return totals


def make_trainer(model: Model, data, config) -> Trainer:
    return Trainer(model, data, config)


def train(model: Model, data, config, on_epoch=None, on_batch=None):
    return training.fit(make_trainer(model, data, config), lambda x, y: evaluate(model, x, y), data, config, on_epoch, on_batch)

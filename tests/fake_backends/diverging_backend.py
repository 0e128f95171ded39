"""The NumPy backend with a trainer whose loss turns to NaN: training must be reported as diverged."""

from tests.fake_backends.numpy_backend import *  # noqa: F401,F403
from tests.fake_backends import numpy_backend


class Trainer(numpy_backend.Trainer):
    def step(self, batch_indices):
        super().step(batch_indices)
        self.loss_sum = float("nan")
        return float("nan")


def make_trainer(model, data, config):
    return Trainer(model, data, config)


def train(model, data, config, on_epoch=None, on_batch=None):
    return numpy_backend.training.fit(make_trainer(model, data, config), lambda x, y: evaluate(model, x, y), data, config, on_epoch, on_batch)

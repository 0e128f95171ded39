"""The shared epoch loop, driven by a NumPy stand-in for a framework's trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.data import FashionMNIST, batch_order
from common.interface import HISTORY_KEYS, TrainConfig, Trainer
from common.training import TrainingDiverged, evaluate_with, fit, step_losses


def tiny_data(n=10):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    return FashionMNIST(images, labels, images[:4], labels[:4])


class RecordingTrainer(Trainer):
    def __init__(self, loss=1.0):
        self.seen, self.loss, self.pending = [], loss, []

    def step(self, indices):
        self.seen.append(indices.tolist())
        self.pending.append(self.loss * len(indices))
        return self.loss

    def epoch_totals(self):
        total, self.pending = sum(self.pending), []
        return total, 3

    def sync_model(self):
        self.syncs = getattr(self, "syncs", 0) + 1


def test_fit_follows_the_batch_order_and_records_every_key():
    data, config = tiny_data(), TrainConfig(epochs=2, batch_size=4, seed=9)
    trainer = RecordingTrainer()
    epochs_seen = []
    history = fit(trainer, lambda x, y: (0.5, 0.25), data, config, on_epoch=epochs_seen.append)
    expected = [b.tolist() for epoch in range(2) for b in batch_order(10, 4, 9, epoch)]
    assert trainer.seen == expected
    assert [tuple(entry) for entry in history] == [HISTORY_KEYS] * 2
    assert history[0]["train_loss"] == pytest.approx(1.0) and history[0]["train_accuracy"] == pytest.approx(0.3)
    assert history[1]["test_accuracy"] == 0.25 and epochs_seen == history
    assert trainer.syncs == 2  # the model holds the trained weights before each evaluation


@pytest.mark.parametrize("loss", [math.nan, math.inf, 1e4])
def test_fit_stops_on_divergence(loss):
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        fit(RecordingTrainer(loss), lambda x, y: (0, 0), tiny_data(), TrainConfig(epochs=3, batch_size=4))


def test_step_losses_crosses_epochs():
    trainer = RecordingTrainer()
    losses = step_losses(trainer, tiny_data(), TrainConfig(batch_size=4, seed=1), steps=5)
    assert losses == [1.0] * 5 and len(trainer.seen) == 5  # 3 batches per epoch, so 2 from epoch 1


def test_evaluate_with_chunks():
    x = np.zeros((5, 1, 28, 28), np.float32)
    logits = np.eye(10)[[1, 2, 3, 4, 5]] * 50.0
    calls = []

    def forward(chunk):
        calls.append(len(chunk))
        start = sum(calls[:-1])
        return logits[start : start + len(chunk)]

    loss, accuracy = evaluate_with(forward, x, np.array([1, 2, 3, 0, 5]), chunk=2)
    assert calls == [2, 2, 1] and accuracy == pytest.approx(0.8) and loss > 0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        TrainConfig(batch_size=0)

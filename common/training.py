"""The training loop every backend shares: batch order, timing, history, divergence.

A backend supplies a Trainer (one compiled step and its optimizer) and an evaluate function;
this module decides which batches run when, so all frameworks see the same examples in the
same order, and records the same history keys everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from common.data import FashionMNIST, batch_order, scale_images
from common.interface import TrainConfig, Trainer
from common.reference import cross_entropy
from common.spec import NUM_CLASSES

# Ten times the loss of a uniform guess: a run above it has left the rails.
DIVERGED_LOSS = 10 * math.log(NUM_CLASSES)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN, infinite or absurdly large."""


def fit(
    trainer: Trainer,
    evaluate: Callable,
    data: FashionMNIST,
    config: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Run config.epochs epochs; return one history entry per epoch (keys: HISTORY_KEYS).

    evaluate(x, y) -> (loss, accuracy) on canonical float32 NCHW input. on_batch(done, total)
    is for progress bars and must not wait on the device.
    """
    n = len(data.train_labels)
    test_x = scale_images(data.test_images)
    history = []
    for epoch in range(config.epochs):
        batches = batch_order(n, config.batch_size, config.seed, epoch)
        start = time.perf_counter()
        for done, indices in enumerate(batches, 1):
            trainer.step(indices)
            if on_batch:
                on_batch(done, len(batches))
        loss_sum, correct = trainer.epoch_totals()
        trainer.sync_model()  # evaluate() reads the model
        seconds = time.perf_counter() - start
        train_loss = loss_sum / n
        if not train_loss < DIVERGED_LOSS:  # also catches NaN
            raise TrainingDiverged(
                f"epoch {epoch + 1}: training loss is {train_loss}; lower the learning rate (now {config.lr})"
            )
        test_loss, test_accuracy = evaluate(test_x, data.test_labels)
        entry = dict(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_accuracy=correct / n,
            test_loss=float(test_loss),
            test_accuracy=float(test_accuracy),
            seconds=seconds,
            images_per_second=n / seconds,
        )
        history.append(entry)
        if on_epoch:
            on_epoch(entry)
    return history


def step_losses(trainer: Trainer, data: FashionMNIST, config: TrainConfig, steps: int) -> list[float]:
    """The loss of each of the first `steps` updates, following the common batch order."""
    losses = []
    epoch = 0
    while len(losses) < steps:
        for indices in batch_order(len(data.train_labels), config.batch_size, config.seed, epoch):
            losses.append(float(trainer.step(indices)))
            if len(losses) == steps:
                break
        epoch += 1
    trainer.epoch_totals()
    trainer.sync_model()
    return losses


def evaluate_with(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, chunk: int = 2000):
    """(mean cross-entropy, accuracy) from a backend's forward, run over x in chunks.

    The loss is computed here, in float64 NumPy, so every framework reports it the same way.
    """
    logits = np.concatenate([forward(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    return cross_entropy(logits, y), float((logits.argmax(axis=1) == np.asarray(y)).mean())


def default_functions(forward: Callable, make_trainer: Callable):
    """evaluate, make_trainer and train for a backend, built from its forward and its Trainer class.

    Every backend shares these; one that needs its own defines it instead (as Keras 3's backend
    trainers override only what their framework does differently).
    """

    def evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return evaluate_with(lambda chunk: forward(model, chunk), x, y)

    def train(model, data: FashionMNIST, config: TrainConfig, on_epoch=None, on_batch=None) -> list[dict]:
        return fit(make_trainer(model, data, config), lambda x, y: evaluate(model, x, y), data, config, on_epoch, on_batch)

    return evaluate, make_trainer, train

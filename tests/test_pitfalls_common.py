"""The shared half of the pitfalls (common/pitfalls.py): one correct-runs cache and one measuring order.

Runs on the float64 NumPy backend, so every env runs it: no framework is needed to check which
correct runs are trained, how often, and in which order the measurements come.
"""

from __future__ import annotations

import types
from dataclasses import replace

import pytest

from common import differences
from common.interface import TrainConfig
from common.pitfalls import CorrectRuns, PitfallContext, measurement_name, measurements
from common.weights import init_weights
from frameworks import get_backend


class CountingBackend:
    """The NumPy oracle backend, counting the training runs it is asked for."""

    def __init__(self):
        self.oracle, self.trained = get_backend("numpy"), []

    def __getattr__(self, name):
        return getattr(self.oracle, name)

    def train(self, model, data, config):
        self.trained.append(config)
        return self.oracle.train(model, data, config)


@pytest.fixture()
def tiny_context(fashion_mnist):
    data = replace(
        fashion_mnist, train_images=fashion_mnist.train_images[:96], train_labels=fashion_mnist.train_labels[:96],
        test_images=fashion_mnist.test_images[:32], test_labels=fashion_mnist.test_labels[:32],
    )
    config = TrainConfig(epochs=2, batch_size=32)
    return PitfallContext(data=data, config=config, initial=init_weights(0), short_epochs=1, first_steps=2)


def test_each_correct_run_is_trained_once_and_a_shorter_one_is_read_from_a_longer(tiny_context):
    backend = CountingBackend()
    runs = CorrectRuns(backend, tiny_context)
    full = runs.full_history
    assert runs.full_history is full and len(full) == 2 and backend.trained == [tiny_context.config]
    assert runs.epoch(1) == full[0] and runs.epoch(2) == full[1]  # the first epoch of the full run is the 1-epoch run
    short = tiny_context.loss_recipe()
    runs.history(short)
    runs.trained_model(short)
    assert backend.trained == [tiny_context.config, short]


def test_the_comparisons_own_run_is_never_trained_again(tiny_context):
    backend = CountingBackend()
    model = CorrectRuns(backend.oracle, tiny_context).start(tiny_context.config)  # trained uncounted: the comparison's run
    history = backend.oracle.train(model, tiny_context.data, tiny_context.config)
    ctx = replace(tiny_context, correct_history=history, trained=init_weights(3))
    runs = CorrectRuns(backend, ctx)
    assert runs.full_history is history and runs.epoch(1) is history[0]
    weights, source = runs.trained()
    assert weights is ctx.trained and source == "the comparison's run"
    assert backend.trained == []


def test_without_the_comparisons_weights_the_layout_mistakes_score_a_run_trained_anyway(tiny_context):
    backend = CountingBackend()
    _, source = CorrectRuns(backend, tiny_context).trained()
    assert backend.trained == [tiny_context.config] and source == "2 epochs of the recipe"
    with_history = replace(tiny_context, correct_history=[{}, {}])
    _, source = CorrectRuns(backend, with_history).trained()  # the batch-order mistake trains this one
    assert backend.trained[-1] == tiny_context.adam_recipe() and source == "Adam, 1 epoch"


def test_measurements_come_in_the_registrys_order_and_a_misnamed_one_is_refused():
    def measure(ctx, runs):
        return []

    mistakes = types.ModuleType("mistakes")
    for entry in (differences.BATCH_ORDER, differences.PADDING, differences.KERNEL_LAYOUT):
        setattr(mistakes, measurement_name(entry), measure)
    assert [difference for difference, _ in measurements(mistakes)] == [
        differences.KERNEL_LAYOUT, differences.PADDING, differences.BATCH_ORDER,
    ]
    mistakes.measure_adam_eps = measure  # no registry entry has this key
    with pytest.raises(TypeError, match="measure_adam_eps"):
        measurements(mistakes)

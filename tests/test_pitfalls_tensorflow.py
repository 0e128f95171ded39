"""TensorFlow/Keras only: each difference the backend handles, and the mistake a Keras user would make.

Every test checks the backend's handling against the float64 oracle (common.reference) within the
parity tolerance, and the mistaken variant from frameworks/tensorflow/pitfalls.py outside it, so
removing the handling fails the test. The records' `test` fields name these tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import reference, spec
from common.data import FashionMNIST, batch_order, scale_images
from common.differences import BY_TITLE
from common.interface import TrainConfig, param_mismatches, shape_mismatches
from common.parity import FORWARD_TOL, GRAD_TOL, STEP_LOSS_TOL
from common.pitfalls import measure
from common.training import step_losses
from common.weights import init_weights
from frameworks import BackendUnavailable, get_backend
from tests.conftest import random_batch, random_weights

try:
    backend = get_backend("tensorflow")
except BackendUnavailable as err:  # in the tensorflow env itself, conftest has already failed the session
    pytest.skip(f"tensorflow not installed in this env: {err.__cause__}", allow_module_level=True)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from frameworks.tensorflow import pitfalls  # noqa: E402

TENSORFLOW_PITFALLS = (
    "Flatten order", "Kernel layout", "Padding", "Initializer", "Loss", "Optimizer defaults", "Batch order", "Dropout at evaluation",
)
RECORD_KEYS = ("difference", "mistake", "framework", "metric", "correct", "mistaken", "test")


def loaded(weights, load=None, variant: str = "classic"):
    """A fresh model with weights loaded by `load` (the backend's set_weights unless a mistaken loader is given)."""
    model = backend.build(variant)
    (load or backend.set_weights)(model, weights)
    return model


def error_vs_oracle(logits, weights, x, variant: str = "classic") -> float:
    return float(np.max(np.abs(np.asarray(logits, np.float64) - reference.forward(weights, x, variant))))


def random_data(n: int = 256, seed: int = 4) -> FashionMNIST:
    """Random uint8 images and labels in the data set's layout: enough for losses that follow the batches."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, spec.NUM_CLASSES, n)
    return FashionMNIST(images, labels, images[:64], labels[:64])


def test_flatten_order_needs_hwc_columns():
    weights, (x, _) = random_weights(), random_batch()
    assert error_vs_oracle(backend.forward(loaded(weights), x), weights, x) <= FORWARD_TOL
    # Every shape fits, so Keras loads the unpermuted fc1 without a word; only the numbers are wrong.
    wrong = loaded(weights, pitfalls.set_weights_without_flatten_permutation)
    assert error_vs_oracle(backend.forward(wrong, x), weights, x) > 100 * FORWARD_TOL


def test_conv_kernels_need_transpose_not_reshape():
    weights, (x, _) = random_weights(), random_batch()
    assert error_vs_oracle(backend.forward(loaded(weights), x), weights, x) <= FORWARD_TOL
    wrong = loaded(weights, pitfalls.set_weights_with_reshaped_kernels)
    assert wrong.get_layer("conv1").kernel.shape == (5, 5, 1, 6)  # the shape Keras wants, the numbers in the wrong places
    assert error_vs_oracle(backend.forward(wrong, x), weights, x) > 100 * FORWARD_TOL


# Keras formats the refused value with np.array(variable), which NumPy 2 flags as a deprecated __array__.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_same_padding_on_conv2_changes_shapes_and_parameters():
    model = backend.build()
    rows = backend.layer_summary(model)
    assert shape_mismatches(rows, "classic") == [] and param_mismatches(rows, "classic") == []
    assert backend.param_count(model) == spec.param_count() == 61706

    wrong = pitfalls.with_same_padding_on_conv2(model)
    wrong_rows = {row.name: row for row in backend.layer_summary(wrong)}
    assert wrong_rows["conv2"].shape == (16, 14, 14) and wrong_rows["flatten"].shape == (16 * 7 * 7,)
    assert [problem.split(":")[0] for problem in shape_mismatches(wrong_rows.values(), "classic")] == ["conv2", "act2", "pool2", "flatten"]
    assert backend.param_count(wrong) == spec.param_count() + 120 * (16 * 7 * 7 - 400)
    with pytest.raises(ValueError, match="must match"):  # the canonical fc1 (120 x 400) no longer fits: the one loud symptom
        backend.set_weights(wrong, init_weights(0))


def test_keras_default_init_is_glorot_but_not_the_canonical_start():
    weights, (x, _) = init_weights(0), random_batch()
    assert error_vs_oracle(backend.forward(loaded(weights), x), weights, x) <= FORWARD_TOL

    keras.utils.set_random_seed(0)
    own = backend.build()  # Keras's own draw: no set_weights
    keras.utils.set_random_seed(0)
    again = backend.get_weights(backend.build())
    own_weights = backend.get_weights(own)
    for name, w in own_weights.items():
        np.testing.assert_array_equal(w, again[name], err_msg=f"{name}: the seeded draw must repeat")
        if name.endswith(".bias"):
            assert not w.any(), name
        else:  # Glorot-uniform, as the recipe: the start differs, not its distribution
            fan_in, fan_out = w.shape[1] * np.prod(w.shape[2:]), w.shape[0] * np.prod(w.shape[2:])
            bound = np.sqrt(6 / (fan_in + fan_out))
            assert 0.9 * bound < np.abs(w).max() <= bound, name
    assert error_vs_oracle(backend.forward(own, x), weights, x) > 100 * FORWARD_TOL


def test_loss_needs_from_logits():
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(0, 3, (32, spec.NUM_CLASSES)).astype(np.float32), rng.integers(0, spec.NUM_CLASSES, 32)
    expected = reference.cross_entropy(logits, labels)
    correct = float(backend.cross_entropy(tf.constant(logits), tf.constant(labels)))
    mistaken = float(pitfalls.cross_entropy_on_logits_as_probabilities(tf.constant(logits), tf.constant(labels))) / len(labels)
    assert abs(correct - expected) / expected <= GRAD_TOL
    assert abs(mistaken - expected) / expected > 100 * GRAD_TOL

    # The mistaken trainer really trains on that loss, and leaves the next trainer's loss alone.
    data, config = random_data(), TrainConfig(seed=5)
    first = batch_order(len(data.train_labels), config.batch_size, config.seed, 0)[0]
    weights = init_weights(0)
    oracle = reference.cross_entropy(reference.forward(weights, scale_images(data.train_images[first])), data.train_labels[first])
    [mistaken_step] = step_losses(pitfalls.KerasDefaultLossTrainer(loaded(weights), data, config), data, config, 1)
    [correct_step] = step_losses(backend.make_trainer(loaded(weights), data, config), data, config, 1)
    assert abs(correct_step - oracle) <= STEP_LOSS_TOL
    assert abs(mistaken_step - oracle) > 100 * STEP_LOSS_TOL


def test_adam_needs_explicit_epsilon(fashion_mnist):
    """Keras adds epsilon before the bias correction, so even the recipe's 1e-8 leaves a small gap to the
    oracle's PyTorch-style Adam, well inside the step-loss tolerance; Keras's default 1e-7 widens it
    several times over, to the edge of that tolerance: past it on these batches (seed 1), not on every
    batch order, hence the second check, that leaving epsilon out moves the losses clearly further away."""
    config, steps = TrainConfig(optimizer="adam", lr=0.001, seed=1), 5
    weights = init_weights(0)
    oracle = step_losses(pitfalls.OracleAdamTrainer(loaded(weights), fashion_mnist, config), fashion_mnist, config, steps)
    correct_trainer = backend.make_trainer(loaded(weights), fashion_mnist, config)
    mistaken_trainer = pitfalls.KerasDefaultAdamTrainer(loaded(weights), fashion_mnist, config)
    assert correct_trainer.optimizer.epsilon == config.eps == 1e-8
    assert mistaken_trainer.optimizer.epsilon == pitfalls.KERAS_DEFAULT_EPSILON == keras.optimizers.Adam().epsilon

    def gap(trainer) -> float:
        return float(np.max(np.abs(np.subtract(step_losses(trainer, fashion_mnist, config, steps), oracle))))

    correct_gap, mistaken_gap = gap(correct_trainer), gap(mistaken_trainer)
    assert correct_gap <= STEP_LOSS_TOL < mistaken_gap
    assert mistaken_gap > 3 * correct_gap


def test_batch_order_is_the_common_one():
    data, config, steps = random_data(), TrainConfig(batch_size=16, seed=7), 3
    weights = init_weights(0)
    oracle_backend = get_backend("numpy")
    oracle_model = oracle_backend.build()
    oracle_backend.set_weights(oracle_model, weights)
    oracle = step_losses(oracle_backend.make_trainer(oracle_model, data, config), data, config, steps)
    common = step_losses(backend.make_trainer(loaded(weights), data, config), data, config, steps)
    assert np.max(np.abs(np.subtract(common, oracle))) <= STEP_LOSS_TOL

    own_order = pitfalls.tf_data_shuffled_batches(len(data.train_labels), config.batch_size, config.seed)
    one_pass = np.concatenate([indices.numpy() for indices in own_order])
    assert sorted(one_pass) == list(range(len(data.train_labels)))  # a fair shuffle, only another one
    trainer = backend.make_trainer(loaded(weights), data, config)
    own = [float(trainer.step(indices)) for indices in own_order.take(steps)]
    assert np.max(np.abs(np.subtract(own, oracle))) > 100 * STEP_LOSS_TOL


def test_dropout_is_off_at_evaluation():
    weights, (x, _) = init_weights(1, "modern"), random_batch()  # Xavier's scale: random_weights' ReLU logits grow past where 1e-5 is float32's noise
    model = loaded(weights, variant="modern")
    assert error_vs_oracle(backend.forward(model, x), weights, x, "modern") <= FORWARD_TOL  # the oracle's eval mode: no dropout
    first, second = pitfalls.forward_in_training_mode(model, x), pitfalls.forward_in_training_mode(model, x)
    assert error_vs_oracle(first, weights, x, "modern") > 100 * FORWARD_TOL
    assert np.max(np.abs(first - second)) > 100 * FORWARD_TOL  # a new mask each call: the same weights score differently


@pytest.mark.slow
def test_measure_records_every_pitfall(tiny_pitfall_context):
    records = measure(tiny_pitfall_context, backend, pitfalls, None)  # the data-parallel row: tests/test_data_parallel.py
    json.dumps(records)  # they travel in summary.json

    for row in records:
        assert all(key in row for key in RECORD_KEYS), row
        assert row["difference"] in BY_TITLE and row["framework"] == "tensorflow", row
        assert "\n" not in row["mistake"] and row["metric"], row
        assert all(isinstance(row[key], (int, float, str)) for key in ("correct", "mistaken")), row
        test_file, test_name = row["test"].split("::")
        own_test = test_file == "tests/test_pitfalls_tensorflow.py" and test_name.startswith("test_") and callable(globals().get(test_name))
        assert own_test, row
    assert sorted({row["difference"] for row in records}) == sorted(TENSORFLOW_PITFALLS)

    by_metric = {(row["difference"], row["metric"]): row for row in records}
    for difference in ("Flatten order", "Kernel layout"):
        forward = by_metric[difference, "forward max abs error vs oracle (initial weights, probe batch)"]
        assert forward["correct"] <= FORWARD_TOL < forward["mistaken"]
    assert (by_metric["Padding", "parameters"]["correct"], by_metric["Padding", "parameters"]["mistaken"]) == (61706, 107786)
    assert by_metric["Dropout at evaluation", "test-accuracy spread over 5 evaluations"]["correct"] == 0
    [adam] = [row for row in records if row["difference"] == "Optimizer defaults"]
    assert adam["correct"] <= STEP_LOSS_TOL
    [shuffled] = [row for row in records if row["difference"] == "Batch order"]
    assert {name: len(losses) for name, losses in shuffled["curves"].items()} == dict(common=1, own=1, other_seed=1)


def test_pixels_are_scaled_bit_identically_to_numpy():
    """Scaling by 255: the Trainer's batch, gathered in a traced graph as every training step gathers it, holds
    exactly common.data.scale_images's float32 bits for all 256 pixel values. x / 255 in the graph (which
    TensorFlow rewrites to x * (1/255)) or x * (1/255) is one ulp off for about half of them and fails here."""
    images = np.resize(np.arange(256, dtype=np.uint8), (4, 28, 28))  # every pixel value, a dozen times
    data = FashionMNIST(images, np.arange(4) % spec.NUM_CLASSES, images[:1], np.zeros(1, np.int64))
    trainer = backend.Trainer(backend.build(), data, TrainConfig(epochs=1))
    x, _ = tf.function(trainer.gather_batch)(tf.constant(np.arange(4), tf.int64))
    expected = np.transpose(scale_images(images), (0, 2, 3, 1))  # canonical N,C,H,W -> the trainer's N,H,W,C
    assert set(np.unique(images)) == set(range(256))
    np.testing.assert_array_equal(x.numpy().view(np.uint32), expected.view(np.uint32))

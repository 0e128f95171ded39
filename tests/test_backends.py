"""Every backend against the spec and the NumPy oracle (common.reference), never against each other.

Parametrized over all four backends; a backend not installed in this env is skipped with the
reason, except in its own tox env, where conftest makes a failed import an error.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from common import reference, spec
from common.data import FashionMNIST, batch_order, scale_images
from common.interface import TrainConfig, missing_names, param_mismatches, shape_mismatches
from common.parity import FORWARD_TOL, GRAD_TOL, relative_error
from common.training import step_losses
from common.weights import hwc_columns, init_weights
from tests.conftest import random_batch, random_weights


def with_random_weights(backend, variant: str = "classic", device: str = "cpu"):
    """A fresh model loaded with conftest's random weights; returns both."""
    model = backend.build(variant, device)
    weights = random_weights()
    backend.set_weights(model, weights)
    return model, weights


def test_exports_the_whole_interface(backend):
    assert missing_names(backend) == []
    assert backend.data_format in ("NCHW", "NHWC")
    assert "cpu" in backend.devices()


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_summary_matches_spec(backend, variant):
    model = backend.build(variant)
    rows = backend.layer_summary(model)
    assert shape_mismatches(rows, variant) == [] and param_mismatches(rows, variant) == []
    assert backend.param_count(model) == spec.param_count(variant) == 61706


def test_weights_round_trip_bit_exact(backend):
    model, weights = with_random_weights(backend)
    back = backend.get_weights(model)
    assert list(back) == list(weights)
    for name in weights:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], weights[name], err_msg=name)


def test_own_init_is_xavier_with_zero_biases(backend):
    weights = backend.get_weights(backend.build())
    for name, w in weights.items():
        if name.endswith(".bias"):
            assert not w.any(), name
        else:
            fan_in, fan_out = w.shape[1] * np.prod(w.shape[2:]), w.shape[0] * np.prod(w.shape[2:])
            bound = np.sqrt(6 / (fan_in + fan_out))
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, name


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_forward_matches_reference(backend, variant):
    model, weights = with_random_weights(backend, variant)
    x, _ = random_batch()
    got = backend.forward(model, x)
    assert got.shape == (len(x), spec.NUM_CLASSES)
    assert np.max(np.abs(got - reference.forward(weights, x, variant))) <= FORWARD_TOL


def test_forward_depends_on_flatten_order(backend):
    """fc1's columns are in C,H,W order: permuting them to H,W,C must change the output."""
    model, weights = with_random_weights(backend)
    x, _ = random_batch()
    expected = backend.forward(model, x)
    assert np.max(np.abs(expected - reference.forward(weights, x))) <= FORWARD_TOL
    hwc = hwc_columns(weights["fc1.weight"], spec.flattened_inputs()["fc1"])
    backend.set_weights(model, {**weights, "fc1.weight": np.ascontiguousarray(hwc)})
    assert np.max(np.abs(backend.forward(model, x) - expected)) > 100 * FORWARD_TOL


@pytest.mark.parametrize("variant", spec.VARIANTS)
def test_loss_and_grads_match_reference(backend, variant):
    model, weights = with_random_weights(backend, variant)
    x, y = random_batch()
    loss, grads = backend.loss_and_grads(model, x, y)
    ref_loss, ref_grads = reference.loss_and_grads(weights, x, y, variant)
    assert abs(loss - ref_loss) / ref_loss <= GRAD_TOL
    assert list(grads) == list(ref_grads)
    for name, ref in ref_grads.items():
        assert grads[name].shape == ref.shape, name
        assert relative_error(grads[name], ref) <= GRAD_TOL, name


def test_evaluate_matches_reference(backend):
    model, weights = with_random_weights(backend)
    x, y = random_batch(64)
    loss, accuracy = backend.evaluate(model, x, y)
    logits = reference.forward(weights, x)
    assert abs(loss - reference.cross_entropy(logits, y)) <= 1e-5
    assert accuracy == pytest.approx(np.mean(logits.argmax(1) == y))


def test_first_sgd_steps_match_reference(backend, fashion_mnist):
    """Plain-SGD updates from the same start equal the oracle's, step by step.

    224 examples in batches of 128 give a full batch, a partial one of 96, then the next epoch:
    the partial batch must be an update on the mean loss of its 96 examples too.
    """
    data = FashionMNIST(fashion_mnist.train_images[:224], fashion_mnist.train_labels[:224], fashion_mnist.test_images, fashion_mnist.test_labels)
    config = TrainConfig(batch_size=128, lr=0.5, seed=3)
    model, weights = with_random_weights(backend)
    losses = step_losses(backend.make_trainer(model, data, config), data, config, steps=3)
    expected, w = [], {k: v.astype(np.float64) for k, v in weights.items()}
    batches = batch_order(224, 128, 3, 0) + batch_order(224, 128, 3, 1)[:1]
    assert [len(b) for b in batches] == [128, 96, 128]
    for indices in batches:
        loss, grads = reference.loss_and_grads(w, scale_images(data.train_images[indices]), data.train_labels[indices])
        expected.append(loss)
        w = {k: w[k] - 0.5 * grads[k] for k in w}
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    for name, value in backend.get_weights(model).items():
        assert relative_error(value, w[name]) <= 1e-3, name


@pytest.mark.slow
def test_short_training_run_lowers_the_loss(backend, fashion_mnist):
    config = TrainConfig(epochs=3, optimizer="adam", lr=0.01, seed=0)
    model = backend.build()
    backend.set_weights(model, init_weights(config.seed))
    history = backend.train(model, fashion_mnist, config)
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    # Sigmoid LeNet idles near ln(10) = 2.30 for a while before it learns (d2l shows the same).
    assert history[2]["train_loss"] < history[0]["train_loss"] - 0.5
    assert history[2]["test_accuracy"] > 0.4


def test_training_is_reproducible(backend, fashion_mnist):
    config = TrainConfig(epochs=1, seed=5, variant="modern", optimizer="adam", lr=0.003)
    losses = []
    for _ in range(2):
        model = backend.build(config.variant)
        backend.set_weights(model, init_weights(config.seed))
        losses.append(step_losses(backend.make_trainer(model, fashion_mnist, config), fashion_mnist, config, steps=5))
    assert losses[0] == losses[1]


@pytest.mark.gpu
def test_gpu_forward_matches_reference(backend):
    if "gpu" not in backend.devices():
        pytest.skip(f"{backend.name} sees no GPU here")
    model, weights = with_random_weights(backend, device="gpu")
    x, _ = random_batch()
    assert np.max(np.abs(backend.forward(model, x) - reference.forward(weights, x))) <= FORWARD_TOL


def run_cli(backend, *args):
    return subprocess.run([sys.executable, "-m", f"frameworks.{backend.name}", *args], capture_output=True, text=True, timeout=600)


def test_cli_summary(backend):
    result = run_cli(backend, "summary")
    assert result.returncode == 0, result.stderr
    assert "61,706" in result.stdout and "fc1" in result.stdout


@pytest.mark.slow  # a training run in a fresh interpreter: the slow tier's end-to-end check of the CLI
def test_cli_train_writes_history(backend, fashion_mnist, tmp_path):
    out = tmp_path / "history.json"
    result = run_cli(backend, "train", "--epochs", "1", "--train-subset", "512", "--test-subset", "256", "--json", str(out))
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["framework"] == backend.name
    assert list(record["history"][0]) == ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "images_per_second"]


def test_cli_rejects_gpu_it_does_not_have(backend):
    if "gpu" in backend.devices():
        pytest.skip("this machine has a GPU")
    result = run_cli(backend, "summary", "--device", "gpu")
    assert result.returncode == 1
    assert "GPU" in result.stdout and "Traceback" not in result.stderr


def test_float32_means_float32_on_gpus(backend):
    """TF32 (about 1e-3 relative error on Ampere and newer GPUs) is off in every framework, set before any GPU work."""
    if backend.name == "pytorch":
        import torch

        assert torch.backends.cudnn.conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    elif backend.name == "tensorflow":
        import tensorflow as tf

        assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    elif backend.name == "jax":
        model = backend.build()
        assert model.conv1.precision == model.conv2.precision == model.fc1.precision == "highest"
    elif backend.name == "mxnet":
        import os

        assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    else:
        assert backend.devices() == ["cpu"]  # the numpy oracle runs in float64 on the CPU

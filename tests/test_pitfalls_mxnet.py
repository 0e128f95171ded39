"""MXNet only: each difference frameworks/mxnet/pitfalls.py measures is guarded here.

Each test checks that the project's handling matches the oracle (common.reference, or the numpy
backend built on it) within the parity tolerance, and that the mistaken variant from pitfalls.py
falls outside it, so removing the handling fails the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from common import reference, spec
from common.data import FashionMNIST, scale_images
from common.differences import BY_TITLE
from common.interface import TrainConfig, shape_mismatches
from common.parity import FORWARD_TOL, GRAD_TOL, STEP_LOSS_TOL
from common.pitfalls import largest_gap, max_abs_error_vs_oracle, measure
from common.training import step_losses
from common.weights import init_weights
from frameworks import BackendUnavailable, get_backend
from tests.conftest import random_batch, random_weights

try:
    backend = get_backend("mxnet")
except BackendUnavailable as err:  # in the mxnet env conftest.py makes this an error instead
    pytest.skip(f"mxnet not installed in this env: {err.__cause__}", allow_module_level=True)

import mxnet as mx  # noqa: E402
from mxnet import autograd  # noqa: E402

from frameworks.mxnet import pitfalls  # noqa: E402
from frameworks.numpy.train import Adam as PyTorchStyleAdam  # noqa: E402

RECORD_KEYS = {"difference", "mistake", "framework", "metric", "correct", "mistaken", "test"}
DIFFERENCES = BY_TITLE  # every title a record may carry: the registry's
# The largest |w| of a uniform draw lies just under the bound it is drawn within: for conv1's 150
# weights (the fewest of any kernel) the chance of missing the last 5% is 0.95^150, under 1e-3.
UNIFORM_BOUND_TOLERANCE = 0.05
GLUON_DEFAULT_BOUND = 0.07  # mx.init.Uniform()'s scale, what net.initialize() draws from


def synthetic_data(n: int = 96, seed: int = 3) -> FashionMNIST:
    """Random uint8 images and labels in the real data's form: a Trainer needs no files."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, spec.NUM_CLASSES, n).astype(np.int64)
    return FashionMNIST(images, labels, images[:16], labels[:16], source="synthetic")


def model_with(weights, variant: str = "classic"):
    model = backend.build(variant)
    backend.set_weights(model, weights)
    return model


def worst_relative_error(values: dict, oracle: dict) -> float:
    """GRAD_TOL's measure: max abs difference / max abs oracle value, for the worst tensor."""
    return max(float(np.max(np.abs(values[k] - oracle[k])) / np.max(np.abs(oracle[k]))) for k in oracle)


def xavier_bound(shape: tuple[int, ...]) -> float:
    """sqrt(6 / (fan_in + fan_out)), fans including a conv's receptive field (common.weights.init_weights)."""
    receptive_field = math.prod(shape[2:])
    return math.sqrt(6.0 / ((shape[0] + shape[1]) * receptive_field))


def largest_weight_over_xavier_bound(weights) -> dict[str, float]:
    return {name: float(np.abs(w).max()) / xavier_bound(w.shape) for name, w in weights.items() if name.endswith(".weight")}


def test_initializer_is_glorot_uniform_not_gluons_default():
    mx.random.seed(0)
    built = backend.get_weights(backend.build())
    ratios = largest_weight_over_xavier_bound(built)
    assert all(1 - UNIFORM_BOUND_TOLERANCE <= ratio <= 1 for ratio in ratios.values()), ratios
    assert not any(built[name].any() for name in built if name.endswith(".bias"))

    gluon_default = backend.get_weights(pitfalls.build_with_gluon_default_init("classic", "cpu", seed=0))
    for name, weight in gluon_default.items():
        if name.endswith(".weight"):
            assert GLUON_DEFAULT_BOUND * (1 - UNIFORM_BOUND_TOLERANCE) <= np.abs(weight).max() <= GLUON_DEFAULT_BOUND, name
        else:
            assert not weight.any(), f"{name}: the bias keeps its zeros initializer"
    # Every LeNet layer's Xavier bound is well above 0.07: the default draws each one too small.
    assert all(ratio < 1 - UNIFORM_BOUND_TOLERANCE for ratio in largest_weight_over_xavier_bound(gluon_default).values())


def gradient_one_step_applied(trainer_class, weights, data: FashionMNIST, indices: np.ndarray, config: TrainConfig) -> dict:
    """(weights before - weights after) / lr for one SGD step: the gradient the trainer applied."""
    model = model_with(weights)
    trainer_class(model, data, config).step(indices)
    after = backend.get_weights(model)
    return {key: (weights[key].astype(np.float64) - after[key]) / config.lr for key in weights}


def test_step_divides_the_gradient_by_the_batch_length():
    data = synthetic_data()
    indices = np.arange(37)  # a partial batch: step() must divide by its length, not by config.batch_size
    # A large lr makes the update dwarf float32's rounding of the weights it is added to.
    config = TrainConfig(lr=10.0)
    weights = random_weights()
    _, oracle = reference.loss_and_grads(weights, scale_images(data.train_images[indices]), data.train_labels[indices])

    applied = gradient_one_step_applied(backend.Trainer, weights, data, indices, config)
    assert worst_relative_error(applied, oracle) < GRAD_TOL

    summed = gradient_one_step_applied(pitfalls.GradientSumTrainer, weights, data, indices, config)
    assert worst_relative_error(summed, oracle) > GRAD_TOL
    # step(1) applies the SUM of the per-example gradients: the batch's length times the mean's.
    assert worst_relative_error({k: g / len(indices) for k, g in summed.items()}, oracle) < GRAD_TOL


def test_conv1_padding_keeps_400_features_for_fc1():
    weights = random_weights()
    x, _ = random_batch()
    model = model_with(weights)
    assert shape_mismatches(backend.layer_summary(model), "classic") == []
    assert pitfalls.features_reaching_fc1(model) == math.prod(spec.flattened_inputs()["fc1"]) == 400
    assert max_abs_error_vs_oracle(backend.forward(model, x), weights, x) <= FORWARD_TOL

    unpadded = pitfalls.build_without_conv1_padding()
    side = ((28 - 4) // 2 - 4) // 2  # conv1 5x5 unpadded, pool 2, conv2 5x5, pool 2
    assert pitfalls.features_reaching_fc1(unpadded) == 16 * side * side == 256
    error = pitfalls.first_forward_error(unpadded)
    assert error is not None and "Shape inconsistent" in error and "400" in error and "256" in error

    # With fc1's in_units left to inference (d2l's spelling) Gluon raises nothing: a smaller net.
    inferred = pitfalls.build_without_conv1_padding(fc1_in_units_inferred=True)
    assert inferred(mx.nd.array(x)).shape == (len(x), spec.NUM_CLASSES)
    assert backend.param_count(inferred) == spec.param_count() - 120 * (400 - 256)


def oracle_adam_weights(weights, data: FashionMNIST, batches, config: TrainConfig, eps_before_bias_correction: bool) -> dict:
    """Weights after Adam steps in float64: the numpy backend's PyTorch-style Adam, or with its eps
    rescaled each step to where MXNet adds it (eps / sqrt(1 - beta2^t) in PyTorch's terms)."""
    adam = PyTorchStyleAdam(config.lr, config.beta1, config.beta2, config.eps)
    params = {key: w.astype(np.float64) for key, w in weights.items()}
    for t, indices in enumerate(batches, 1):
        _, grads = reference.loss_and_grads(params, scale_images(data.train_images[indices]), data.train_labels[indices])
        if eps_before_bias_correction:
            adam.eps = config.eps / math.sqrt(1 - config.beta2**t)
        params = adam.update(params, grads)
    return params


def adam_weights(trainer_class, weights, data: FashionMNIST, batches, config: TrainConfig) -> dict:
    model = model_with(weights)
    trainer = trainer_class(model, data, config)
    for indices in batches:
        trainer.step(indices)
    return backend.get_weights(model)


def test_adam_adds_eps_before_the_bias_correction():
    data = synthetic_data()
    batches = [np.arange(0, 32), np.arange(32, 64), np.arange(64, 96)]
    # Every hyperparameter off its default, so each must reach MXNet's Adam from the config; eps this
    # large puts many gradients near it, where its place shows far above float32's noise.
    config = TrainConfig(optimizer="adam", lr=0.01, beta1=0.8, beta2=0.99, eps=1e-3)
    weights = random_weights()

    def relative_to_the_updates(result: dict, expected: dict) -> float:
        moved = {key: expected[key] - weights[key] for key in weights}
        return worst_relative_error({key: result[key] - weights[key] for key in weights}, moved)

    mxnet_formula = oracle_adam_weights(weights, data, batches, config, eps_before_bias_correction=True)
    pytorch_formula = oracle_adam_weights(weights, data, batches, config, eps_before_bias_correction=False)
    mxnet_adam = adam_weights(backend.Trainer, weights, data, batches, config)
    assert relative_to_the_updates(mxnet_adam, mxnet_formula) < GRAD_TOL
    assert relative_to_the_updates(mxnet_adam, pytorch_formula) > GRAD_TOL  # the mistake: taking it for PyTorch's Adam

    moved_eps = adam_weights(pitfalls.PyTorchEpsAdamTrainer, weights, data, batches, config)
    assert relative_to_the_updates(moved_eps, pytorch_formula) < GRAD_TOL


def test_common_batch_order_matches_the_oracle_own_shuffle_does_not(fashion_mnist):
    config, steps = TrainConfig(), 3
    weights = init_weights(config.seed)
    oracle = get_backend("numpy")
    oracle_model = oracle.build()
    oracle.set_weights(oracle_model, weights)
    oracle_losses = step_losses(oracle.make_trainer(oracle_model, fashion_mnist, config), fashion_mnist, config, steps)

    common = step_losses(backend.Trainer(model_with(weights), fashion_mnist, config), fashion_mnist, config, steps)
    assert largest_gap(common, oracle_losses) < STEP_LOSS_TOL
    own = step_losses(pitfalls.DataLoaderOrderTrainer(model_with(weights), fashion_mnist, config), fashion_mnist, config, steps)
    assert largest_gap(own, oracle_losses) > STEP_LOSS_TOL


def test_forward_runs_dropout_in_predict_mode():
    weights = init_weights(1)  # Xavier's scale: random_weights' ReLU logits grow past where 1e-5 is float32's noise
    x, _ = random_batch(64)
    model = model_with(weights, "modern")
    first, second = backend.forward(model, x), backend.forward(model, x)
    assert max_abs_error_vs_oracle(first, weights, x, "modern") <= FORWARD_TOL  # the oracle's dropout is off
    assert np.array_equal(first, second)

    mx.random.seed(0)
    with autograd.train_mode():  # the mistake: dropout drops while evaluating
        dropped, dropped_again = backend.forward(model, x), backend.forward(model, x)
    assert max_abs_error_vs_oracle(dropped, weights, x, "modern") > FORWARD_TOL
    assert not np.array_equal(dropped, dropped_again)


@pytest.mark.slow
def test_measure_records_every_pitfall(tiny_pitfall_context):
    ctx = tiny_pitfall_context
    records = measure(ctx, backend, pitfalls, None)  # the data-parallel row: tests/test_data_parallel.py

    assert len(records) == 6 and len({r["difference"] for r in records}) == 6
    for entry in records:
        assert RECORD_KEYS <= set(entry), entry
        assert entry["difference"] in DIFFERENCES
        assert entry["framework"] == "mxnet"
        path, _, test_name = entry["test"].partition("::")
        own_test = path == "tests/test_pitfalls_mxnet.py" and test_name.startswith("test_") and callable(globals().get(test_name))
        assert own_test, entry["test"]
        assert isinstance(entry["correct"], float), entry
        assert isinstance(entry["mistaken"], (float, str)), entry

    by_difference = {entry["difference"]: entry for entry in records}
    assert by_difference["Padding"]["correct"] == 400 and by_difference["Padding"]["mistaken"].startswith("256, then fc1 raises")
    assert by_difference["Dropout at evaluation"]["correct"] == 0.0
    assert set(by_difference["Batch order"]["curves"]) == {"common", "own", "other_seed"}
    assert all(len(curve) == ctx.short_epochs for curve in by_difference["Batch order"]["curves"].values())

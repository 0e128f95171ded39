"""JAX only: each difference the jax backend handles, against the mistake a user would make instead.

Every test checks that the project's handling matches the float64 oracle (common.reference) within
the parity tolerance and that the mistaken variant of frameworks/jax/pitfalls.py falls outside it,
so a test fails when the handling it guards is removed. The records of common.pitfalls.measure() name these tests.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from common import reference, spec
from common.differences import BY_TITLE
from common.interface import TrainConfig, shape_mismatches
from common.parity import FORWARD_TOL, STEP_LOSS_TOL
from common.pitfalls import max_abs_error_vs_oracle, measure
from common.training import step_losses
from common.weights import init_weights
from frameworks import BackendUnavailable, get_backend
from tests.conftest import ADAM_EPS_CONFIG, assert_adam_matches_the_oracle, eps_sized_gradients, random_batch, random_weights

try:
    backend = get_backend("jax")
except BackendUnavailable as err:  # in the jax env conftest makes this an error at session start instead
    pytest.skip(f"jax not installed in this env: {err.__cause__}", allow_module_level=True)

import jax.numpy as jnp  # noqa: E402  (only once jax imports)
from flax import nnx  # noqa: E402

from frameworks.jax import pitfalls  # noqa: E402

THIS_FILE = "tests/test_pitfalls_jax.py"
DIFFERENCES = BY_TITLE  # every title a record may carry: the registry's
RECORD_KEYS = {"difference", "mistake", "framework", "metric", "correct", "mistaken", "test"}
ORACLE_STEPS = 2  # the first loss comes before any update, the second after one
SGD = TrainConfig(epochs=1, batch_size=32)  # small batches keep the float64 oracle quick


def oracle_gap(model, weights, x, variant: str = "classic") -> float:
    return max_abs_error_vs_oracle(backend.forward(model, x), weights, x, variant)


def model_with(weights, set_weights=backend.set_weights, variant: str = "classic"):
    model = backend.build(variant)
    set_weights(model, weights)
    return model


@pytest.fixture(scope="module")
def oracle_step_losses(fashion_mnist):
    """The first SGD step losses of the float64 oracle backend on the common batch order, from init_weights(0)."""
    oracle = get_backend("numpy")
    model = oracle.build()
    oracle.set_weights(model, init_weights(0))
    return step_losses(oracle.make_trainer(model, fashion_mnist, SGD), fashion_mnist, SGD, ORACLE_STEPS)


@functools.cache
def training_model():
    """One model for every training test: the backend compiles its jitted step once per model object."""
    return backend.build()


def jax_step_losses(trainer_class, data) -> list[float]:
    model = training_model()
    backend.set_weights(model, init_weights(0))
    return step_losses(trainer_class(model, data, SGD), data, SGD, ORACLE_STEPS)


def largest_gap(a, b) -> float:
    return float(np.max(np.abs(np.subtract(a, b))))


def test_flatten_order_needs_hwc_columns():
    weights, (x, _) = random_weights(), random_batch()
    assert oracle_gap(model_with(weights), weights, x) < FORWARD_TOL
    # Every shape fits, nothing raises: only the numbers show the mistake.
    assert oracle_gap(model_with(weights, pitfalls.set_weights_without_flatten_permutation), weights, x) > FORWARD_TOL


def test_kernel_layout_needs_a_transpose():
    weights, (x, _) = random_weights(), random_batch()
    assert oracle_gap(model_with(weights), weights, x) < FORWARD_TOL
    assert oracle_gap(model_with(weights, pitfalls.set_weights_with_reshaped_kernels), weights, x) > FORWARD_TOL


def test_padding_same_on_conv2_breaks_fc1():
    weights, (x, _) = random_weights(), random_batch()
    correct = model_with(weights)
    assert shape_mismatches(backend.layer_summary(correct), "classic") == []
    assert oracle_gap(correct, weights, x) < FORWARD_TOL

    mistaken = pitfalls.build_with_same_padding_on_conv2()
    shapes, error = pitfalls.layer_shapes_until_error(mistaken)
    assert dict(shapes)["pool2"] == (7, 7, 16) and pitfalls.features_reaching(shapes) == 16 * 7 * 7
    assert error.startswith("fc1:") and "784" in error
    backend.set_weights(mistaken, weights)  # the parameters still fit: only the activations grow
    with pytest.raises(TypeError, match="784"):
        backend.forward(mistaken, x)


def follows_xavier_uniform(kernel: np.ndarray) -> bool:
    """Within Xavier-uniform's bound, with its variance bound**2 / 3 (4 standard errors of a uniform sample)."""
    receptive_field = int(np.prod(kernel.shape[2:]))
    fan_out, fan_in = kernel.shape[0] * receptive_field, kernel.shape[1] * receptive_field
    bound = math.sqrt(6 / (fan_in + fan_out))
    # A uniform sample's variance has relative standard error sqrt(0.8 / n) (its kurtosis is 1.8).
    variance_ok = abs(kernel.var() / (bound**2 / 3) - 1) < 4 * math.sqrt(0.8 / kernel.size)
    return bool(np.abs(kernel).max() <= bound and variance_ok)


def test_initializer_is_the_canonical_start():
    weights, (x, _) = init_weights(0), random_batch()
    assert oracle_gap(model_with(weights), weights, x) < FORWARD_TOL
    flax_default = pitfalls.build_with_flax_default_init("classic", seed=0)
    assert oracle_gap(flax_default, weights, x) > FORWARD_TOL
    # build()'s own weights, used before set_weights, also follow the recipe's initializer; Flax's default does not.
    own, default = backend.get_weights(backend.build()), backend.get_weights(flax_default)
    kernels = [f"{layer.name}.weight" for layer in spec.param_layers()]
    assert all(follows_xavier_uniform(own[name]) for name in kernels)
    assert not all(follows_xavier_uniform(default[name]) for name in kernels)
    assert all(not np.any(default[f"{layer.name}.bias"]) for layer in spec.param_layers())  # Flax's biases start at zero too


def test_loss_is_the_batch_mean(fashion_mnist, oracle_step_losses):
    logits, (_, y) = np.random.default_rng(3).normal(0, 3, (16, spec.NUM_CLASSES)).astype(np.float32), random_batch()
    assert abs(float(backend.cross_entropy(logits, y)) - reference.cross_entropy(logits, y)) < STEP_LOSS_TOL
    assert largest_gap(jax_step_losses(backend.Trainer, fashion_mnist), oracle_step_losses) < STEP_LOSS_TOL
    # The same first loss (no update yet), then the 128x larger steps of the summed loss.
    summed = jax_step_losses(pitfalls.SummedLossTrainer, fashion_mnist)
    assert abs(summed[0] - oracle_step_losses[0]) < STEP_LOSS_TOL
    assert largest_gap(summed, oracle_step_losses) > STEP_LOSS_TOL


def test_batch_order_is_the_common_one(fashion_mnist, oracle_step_losses):
    assert largest_gap(jax_step_losses(backend.Trainer, fashion_mnist), oracle_step_losses) < STEP_LOSS_TOL
    assert largest_gap(jax_step_losses(pitfalls.UserShuffledTrainer, fashion_mnist), oracle_step_losses) > STEP_LOSS_TOL


def test_user_shuffle_repeats_its_order_every_epoch():
    """jax.random.key(seed) is a value: reusing it each epoch gives the same permutation each time."""
    first, again = pitfalls.user_permutation(0, 1000), pitfalls.user_permutation(0, 1000)
    assert sorted(first) == list(range(1000)) and np.array_equal(first, again)


def test_dropout_is_off_at_evaluation():
    # Xavier weights: random_weights' larger ones give ReLU logits big enough for float32 to round past 1e-5.
    weights, (x, _) = init_weights(0, "modern"), random_batch(64)
    model = model_with(weights, variant="modern")
    assert oracle_gap(model, weights, x, "modern") < FORWARD_TOL
    assert np.array_equal(backend.forward(model, x), backend.forward(model, x))
    first, second = (backend.forward(pitfalls.training_mode(model, stream), x) for stream in (0, 1))
    assert max_abs_error_vs_oracle(first, weights, x, "modern") > FORWARD_TOL
    assert np.max(np.abs(first - second)) > FORWARD_TOL  # each evaluation draws other masks
    assert oracle_gap(model, weights, x, "modern") < FORWARD_TOL  # the training-mode copy left the model in eval mode


@pytest.mark.slow
def test_measure_records_every_pitfall(tiny_pitfall_context):
    records = measure(tiny_pitfall_context, backend, pitfalls, None)  # the data-parallel row: tests/test_data_parallel.py
    assert {r["difference"] for r in records} == {
        "Flatten order", "Kernel layout", "Padding", "Initializer", "Loss", "Batch order", "Dropout at evaluation",
    }
    for r in records:
        assert RECORD_KEYS <= r.keys() and r["framework"] == "jax" and r["difference"] in DIFFERENCES
        assert isinstance(r["correct"], float) and isinstance(r["mistaken"], float | str), r
        assert "\n" not in r["mistake"] and len(r["mistake"]) < 100
        path, name = r["test"].split("::")
        assert path == THIS_FILE and name.startswith("test_") and callable(globals().get(name)), r["test"]
    padding = next(r for r in records if r["metric"] == "features reaching fc1")
    assert (padding["correct"], padding["mistaken"]) == (400.0, 784.0)
    assert set(next(r for r in records if r["difference"] == "Batch order")["curves"]) == {"common", "own", "other_seed"}


def test_adam_eps_is_added_after_the_bias_correction():
    """Optimizer defaults: make_optimizer's optax Adam takes every hyperparameter from the config and adds eps
    to sqrt(v_hat) (eps_root=0), as the float64 oracle does; another eps, or eps inside the square root, fails here."""
    gradients = eps_sized_gradients()
    holder = nnx.Module()
    holder.w = nnx.Param(jnp.zeros(len(gradients[0])))
    optimizer = backend.make_optimizer(holder, ADAM_EPS_CONFIG)
    path = []
    for g in gradients:
        gradient = jnp.asarray(g, jnp.float32)
        optimizer.update(holder, nnx.grad(lambda module, gradient=gradient: jnp.sum(module.w[...] * gradient))(holder))  # d/dw = g
        path.append(np.asarray(holder.w[...]))
    assert_adam_matches_the_oracle(np.array(path), gradients)

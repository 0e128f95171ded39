"""PyTorch only: each difference the pytorch backend handles, against the mistake a user would make instead.

Every test checks that the project's handling matches the float64 oracle (common.reference, or the
numpy backend built on it) within the parity tolerance, and that the mistaken variant of
frameworks/pytorch/pitfalls.py falls outside it, so a test fails when the handling it guards is
removed. The records of common.pitfalls.measure() name these tests.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from common import reference, spec
from common.data import FashionMNIST, batch_order, scale_images
from common.differences import BY_TITLE
from common.interface import TrainConfig
from common.parity import FORWARD_TOL, GRAD_TOL, STEP_LOSS_TOL, relative_error
from common.pitfalls import max_abs_error_vs_oracle, measure
from common.training import step_losses
from common.weights import init_weights
from frameworks import BackendUnavailable, get_backend
from tests.conftest import ADAM_EPS_CONFIG, assert_adam_matches_the_oracle, eps_sized_gradients, random_batch, random_weights

try:
    backend = get_backend("pytorch")
except BackendUnavailable as err:  # in the pytorch env conftest makes this an error at session start instead
    pytest.skip(f"pytorch not installed in this env: {err.__cause__}", allow_module_level=True)

import torch  # noqa: E402  (only once pytorch imports)

from frameworks.pytorch import pitfalls  # noqa: E402
from frameworks.pytorch.convert import canonical_params  # noqa: E402

DIFFERENCES = BY_TITLE  # every title a record may carry: the registry's
RECORD_KEYS = {"difference", "mistake", "framework", "metric", "correct", "mistaken", "test"}
SGD = TrainConfig(epochs=1)  # the d2l recipe: classic, plain SGD, lr 0.1, batch 128, seed 0
ORACLE_STEPS = 2  # the first step shows which batch came first, the second also the first update
# The canonical init is a distribution, not values: each weight tensor's standard deviation from
# build() must be within this fraction of the oracle initializer's (init_weights).
INIT_STD_TOL = 0.15


def model_with(weights, variant: str = "classic", model=None):
    model = model if model is not None else backend.build(variant)
    backend.set_weights(model, weights)
    return model


def oracle_gap(logits, weights, x, variant: str = "classic") -> float:
    return max_abs_error_vs_oracle(logits, weights, x, variant)


def std_ratios(weights) -> dict[str, float]:
    """Each weight tensor's standard deviation over the oracle initializer's (biases are checked apart)."""
    canonical = init_weights(0)
    return {name: float(np.std(w) / np.std(canonical[name])) for name, w in weights.items() if name.endswith(".weight")}


def first_batch(data: FashionMNIST) -> np.ndarray:
    return batch_order(len(data.train_labels), SGD.batch_size, SGD.seed, 0)[0]


def oracle_loss_and_grads(weights, data: FashionMNIST, indices: np.ndarray):
    return reference.loss_and_grads(weights, scale_images(data.train_images[indices]), data.train_labels[indices])


@pytest.fixture(scope="module")
def oracle_first_batch(fashion_mnist):
    """The float64 mean loss of the common order's first batch at init_weights(0), and its gradients."""
    return oracle_loss_and_grads(init_weights(SGD.seed), fashion_mnist, first_batch(fashion_mnist))


@pytest.fixture(scope="module")
def oracle_sgd_losses(fashion_mnist, oracle_first_batch):
    """The float64 oracle's first SGD step losses on the common batch order (common.data.batch_order), from init_weights(0)."""
    loss, grads = oracle_first_batch
    weights, losses = {name: w.astype(np.float64) for name, w in init_weights(SGD.seed).items()}, [loss]
    for indices in batch_order(len(fashion_mnist.train_labels), SGD.batch_size, SGD.seed, 0)[1:ORACLE_STEPS]:
        weights = {name: w - SGD.lr * grads[name] for name, w in weights.items()}
        loss, grads = oracle_loss_and_grads(weights, fashion_mnist, indices)
        losses.append(loss)
    return losses


def first_step(trainer_class, data: FashionMNIST) -> tuple[float, dict]:
    """The loss a trainer reports for the common order's first batch from init_weights(0), and the
    gradients its step back-propagated (left in .grad after the update)."""
    model = model_with(init_weights(SGD.seed))
    loss = float(trainer_class(model, data, SGD).step(first_batch(data)))
    return loss, {name: param.grad.numpy() for name, param in canonical_params(model).items()}


def worst_grad_error(grads, expected) -> float:
    return max(relative_error(grads[name], expected[name]) for name in expected)


def test_initializer_is_xavier_not_pytorch_default():
    torch.manual_seed(0)
    built = backend.get_weights(backend.build())
    defaults = backend.get_weights(pitfalls.reinitialize_with_pytorch_defaults(backend.build(), seed=0))
    biases = [name for name in built if name.endswith(".bias")]
    assert all(not built[name].any() for name in biases)
    assert all(abs(ratio - 1) <= INIT_STD_TOL for ratio in std_ratios(built).values()), std_ratios(built)
    # PyTorch's own init: uniform biases, and Kaiming-uniform(a=sqrt(5)) weights, far narrower than Xavier in fc1-fc3.
    assert all(defaults[name].any() for name in biases)
    assert max(abs(ratio - 1) for ratio in std_ratios(defaults).values()) > INIT_STD_TOL, std_ratios(defaults)


def test_loss_takes_logits_not_probabilities(fashion_mnist, oracle_first_batch):
    weights = random_weights()
    model = model_with(weights)
    x, y = random_batch()
    expected_loss, expected_grads = reference.loss_and_grads(weights, x, y)

    def loss_and_grads(loss_function):
        model.zero_grad(set_to_none=True)
        loss = loss_function(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        return float(loss.detach()), {name: param.grad.numpy() for name, param in canonical_params(model).items()}

    loss, grads = loss_and_grads(backend.cross_entropy)
    assert abs(loss - expected_loss) / expected_loss <= GRAD_TOL and worst_grad_error(grads, expected_grads) <= GRAD_TOL
    loss, grads = loss_and_grads(lambda logits, labels: pitfalls.softmax_before_loss(logits, labels) / len(labels))
    assert abs(loss - expected_loss) / expected_loss > GRAD_TOL and worst_grad_error(grads, expected_grads) > GRAD_TOL
    # The trainer measure() runs back-propagates that wrong loss.
    _, expected_grads = oracle_first_batch
    assert worst_grad_error(first_step(backend.Trainer, fashion_mnist)[1], expected_grads) <= GRAD_TOL
    assert worst_grad_error(first_step(pitfalls.SoftmaxBeforeLossTrainer, fashion_mnist)[1], expected_grads) > GRAD_TOL


def test_loss_is_the_batch_mean_not_the_sum(fashion_mnist, oracle_first_batch):
    expected_loss, expected_grads = oracle_first_batch
    correct_loss, correct_grads = first_step(backend.Trainer, fashion_mnist)
    summed_loss, summed_grads = first_step(pitfalls.SummedLossTrainer, fashion_mnist)
    # Both report the batch's mean loss, so the history and the divergence check stay per example ...
    assert abs(correct_loss - expected_loss) <= STEP_LOSS_TOL and abs(summed_loss - expected_loss) <= STEP_LOSS_TOL
    # ... but the sum's gradient, and so its SGD step, is batch-size times the mean's.
    assert worst_grad_error(correct_grads, expected_grads) <= GRAD_TOL < worst_grad_error(summed_grads, expected_grads)
    batch_size = len(first_batch(fashion_mnist))
    assert worst_grad_error(summed_grads, {name: batch_size * g for name, g in expected_grads.items()}) <= GRAD_TOL


def test_conv1_is_padded_by_2():
    weights = random_weights()
    x, _ = random_batch()
    model = model_with(weights)
    rows = pitfalls.shapes_before_fc1(model)
    assert rows[-1].shape == (int(np.prod(spec.flattened_inputs()["fc1"])),) == (400,)
    assert oracle_gap(backend.forward(model, x), weights, x) <= FORWARD_TOL
    mistaken = model_with(weights, model=pitfalls.build_without_conv1_padding())  # the weights still fit: no error yet
    shapes = {row.name: row.shape for row in pitfalls.shapes_before_fc1(mistaken)}
    assert shapes["conv1"] == (6, 24, 24) and shapes["pool2"] == (16, 4, 4) and shapes["flatten"] == (256,)
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        backend.forward(mistaken, x)


def test_batches_follow_the_common_order(fashion_mnist, oracle_sgd_losses):
    losses = {}
    for trainer_class in (backend.Trainer, pitfalls.DataLoaderShuffleTrainer):
        trainer = trainer_class(model_with(init_weights(SGD.seed)), fashion_mnist, SGD)
        losses[trainer_class] = step_losses(trainer, fashion_mnist, SGD, ORACLE_STEPS)
    assert np.max(np.abs(np.subtract(losses[backend.Trainer], oracle_sgd_losses))) <= STEP_LOSS_TOL
    assert np.max(np.abs(np.subtract(losses[pitfalls.DataLoaderShuffleTrainer], oracle_sgd_losses))) > STEP_LOSS_TOL


def test_own_shuffling_is_a_new_permutation_every_epoch(fashion_mnist):
    """The mistaken order is a real reshuffle (each example once per epoch, batches of the common
    sizes), only not the common one: so its cost is the order's alone."""
    data = FashionMNIST(fashion_mnist.train_images[:300], fashion_mnist.train_labels[:300], fashion_mnist.test_images, fashion_mnist.test_labels)
    fed = []

    class Recording(pitfalls.DataLoaderShuffleTrainer):
        def batch(self, batch_indices):
            fed.append(np.asarray(batch_indices))
            return super().batch(batch_indices)

    trainer = Recording(model_with(init_weights(0)), data, SGD)
    common = [b for epoch in range(2) for b in batch_order(300, SGD.batch_size, SGD.seed, epoch)]
    for indices in common:
        trainer.step(indices)
    assert [len(b) for b in fed] == [len(b) for b in common] == [128, 128, 44] * 2
    epochs = [np.concatenate(fed[:3]), np.concatenate(fed[3:])]
    assert all(sorted(order) == list(range(300)) for order in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.concatenate(common[:3]))


def test_evaluation_turns_dropout_off():
    weights = init_weights(1, "modern")  # Xavier's scale: random_weights' ReLU logits grow past where 1e-5 is float32's noise
    model = model_with(weights, "modern")
    x, _ = random_batch(64)
    model.train()  # as a training step leaves it
    first, second = backend.forward(model, x), backend.forward(model, x)
    assert oracle_gap(first, weights, x, "modern") <= FORWARD_TOL and np.array_equal(first, second)
    first, second = pitfalls.forward_in_train_mode(model, x), pitfalls.forward_in_train_mode(model, x)
    assert oracle_gap(first, weights, x, "modern") > FORWARD_TOL and not np.array_equal(first, second)


def test_float32_means_ieee_not_tf32():
    """The backend sets true float32 on loading. The mistake's setting is PyTorch's default for
    cuDNN convolutions; its cost needs an Ampere or newer GPU, where it is measured here too."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    assert conv.fp32_precision == matmul.fp32_precision == "ieee"
    with pitfalls.fp32_precision("tf32"):
        assert conv.fp32_precision == matmul.fp32_precision == "tf32"
    assert conv.fp32_precision == matmul.fp32_precision == "ieee"
    if pitfalls.has_tf32():
        weights = random_weights()
        x, _ = random_batch(64)
        assert pitfalls.gpu_forward_error(weights, x, "ieee") <= FORWARD_TOL < pitfalls.gpu_forward_error(weights, x, "tf32")


@pytest.mark.slow
def test_measure_records_every_pitfall(tiny_pitfall_context):
    records = measure(tiny_pitfall_context, backend, pitfalls, None)  # the data-parallel row: tests/test_data_parallel.py
    this_module = sys.modules[__name__]
    for entry in records:
        assert RECORD_KEYS <= set(entry), entry
        assert entry["difference"] in DIFFERENCES and entry["framework"] == "pytorch"
        path, test_name = entry["test"].split("::")
        own_test = path == "tests/test_pitfalls_pytorch.py" and callable(getattr(this_module, test_name, None))
        assert own_test, entry["test"]
        assert all(isinstance(entry[key], (float, str)) for key in ("correct", "mistaken")), entry
    assert {entry["difference"] for entry in records} == {
        "Initializer", "Loss", "Padding", "Batch order", "Dropout at evaluation", "Float32 on GPUs (TF32)",
    }
    by_metric = {(entry["difference"], entry["metric"].split(" (")[0]): entry for entry in records}
    assert (by_metric[("Padding", "features reaching fc1")]["correct"], by_metric[("Padding", "features reaching fc1")]["mistaken"]) == (400, 256)
    curves = next(entry["curves"] for entry in records if entry["difference"] == "Batch order")
    assert set(curves) == {"common", "own", "other_seed"} and all(len(curve) == 1 for curve in curves.values())
    dropout = next(entry for entry in records if entry["difference"] == "Dropout at evaluation")
    assert dropout["correct"] == 0.0 < dropout["mistaken"]


def test_adam_eps_is_added_after_the_bias_correction():
    """Optimizer defaults: make_optimizer's Adam takes every hyperparameter from the config and adds eps to
    sqrt(v_hat), as the float64 oracle does; another eps, or eps inside the square root, fails here."""
    gradients = eps_sized_gradients()
    holder = torch.nn.Module()
    holder.w = torch.nn.Parameter(torch.zeros(len(gradients[0])))
    optimizer = backend.make_optimizer(holder, ADAM_EPS_CONFIG)
    path = []
    for g in gradients:
        holder.w.grad = torch.from_numpy(g.astype(np.float32))
        optimizer.step()
        path.append(holder.w.detach().numpy().copy())
    assert_adam_matches_the_oracle(np.array(path), gradients)

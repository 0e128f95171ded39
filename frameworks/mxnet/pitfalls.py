"""What each MXNet Gluon difference costs when a user gets it wrong, measured for real.

Each measure_<difference>(ctx, runs) makes a mistake a Gluon user would make, with MXNet itself,
and sets it against the correct run (common.pitfalls.CorrectRuns) from the same start: ctx.initial's
weights, the common batch order (common.training.fit and step_losses) and the backend's own
Trainer. Each mistaken variant is a small named function or class here that reuses the backend's
pieces and changes only what the mistake changes. The shared contract (PitfallContext, record) is
common/pitfalls.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from common import differences, spec
from common.interface import DEFAULT_LR, TrainConfig
from common.pitfalls import (
    CorrectRuns,
    PitfallContext,
    accuracy_curves,
    batch_order_record,
    epochs_text,
    error_line,
    guarded_by,
    largest_gap,
    record,
    spread,
)
from common.training import TrainingDiverged, evaluate_with, fit, step_losses
from frameworks import get_backend
from frameworks import mxnet as backend
from frameworks.mxnet import distributed
from frameworks.mxnet.model import _DONE_BY_DENSE, _LAYERS, GLOROT_UNIFORM, model_device, resolve_device

FRAMEWORK = "mxnet"
# The data-parallel reduction pitfall's engine: one that starts in seconds (see data_parallel_reduction)
REDUCTION_ENGINE = "local"
DROPOUT_EVALUATIONS = 5


def last_epoch_or_divergence(trainer, model, ctx: PitfallContext, config: TrainConfig) -> dict | str:
    """The last history entry of a run with the common loop, or the divergence text
    (common.pitfalls.final_accuracy_and_curve's rule, for a metric other than the accuracy)."""
    try:
        return fit(trainer, lambda x, y: backend.evaluate(model, x, y), ctx.data, config)[-1]
    except TrainingDiverged as err:
        return f"diverged: {err}"


# --- Initializer -----------------------------------------------------------------------------
# Gluon's initialize() without an initializer draws every weight from Uniform(-0.07, 0.07),
# whatever the layer's fan-in and fan-out (Xavier's bound is 0.10 to 0.25 for LeNet's layers).
# Through five sigmoid layers the signal and the gradients then shrink layer after layer, and
# plain SGD stays on the plateau of a uniform guess far longer than from Xavier's scale.


def build_with_gluon_default_init(variant: str, device: str, seed: int):
    """The network as `net.initialize()` leaves it: Uniform(0.07) weights and zero biases.

    build() has already initialized with Glorot, so force_reinit redraws; the biases keep their
    own bias_initializer ("zeros"), which overrides the block-wide default, as in a user's net.
    """
    model = backend.build(variant, device)
    mx.random.seed(seed)
    model.initialize(ctx=resolve_device(device), force_reinit=True)
    return model


def measure_initializer(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    config = ctx.config
    mistaken, curve = runs.mistaken_run(config, model=build_with_gluon_default_init(config.variant, config.device, config.seed))
    return record(
        differences.INITIALIZER, "net.initialize()", FRAMEWORK, f"final test accuracy ({epochs_text(config.epochs)})",
        runs.epoch(config.epochs)["test_accuracy"], mistaken, guarded_by(FRAMEWORK, "test_initializer_is_glorot_uniform_not_gluons_default"),
        **accuracy_curves(runs.full_history, curve),
    )


# --- Gluon step(batch_size) ------------------------------------------------------------------
# Gluon losses are per example, and backward() of a vector differentiates its SUM. step(n)
# divides the gradient by n; step(1) leaves the sum, so every update is batch_size times the
# mean loss's: SGD at lr 0.1 * 128 = 12.8. The sigmoids saturate rather than overflow, so the
# run need not diverge: it is thrown about above a uniform guess's loss instead of descending.
# (step(1) is right only after loss.mean().)


class GradientSumTrainer(backend.Trainer):
    """The backend's Trainer driven as `trainer.step(1)`: its `reduce` hook keeps the per-example
    losses but passes 1 to step(), whatever the batch size."""

    def reduce(self, losses, global_batch_size: int):
        return losses, 1


def measure_gluon_step(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    """Training loss, not test accuracy: d2l's sigmoid LeNet takes a few epochs to leave the
    plateau of a uniform guess, so after a short run both nets can score chance on the test set,
    while the loss already shows whether a run descends or is thrown about (both accuracies are
    kept beside it)."""
    config = ctx.recipe(epochs=ctx.short_epochs)
    model = runs.start(config)
    mistaken = last_epoch_or_divergence(GradientSumTrainer(model, ctx.data, config), model, ctx, config)
    correct = runs.epoch(config.epochs)
    return dict(
        record(
            differences.GLUON_STEP, "trainer.step(1)", FRAMEWORK,
            f"training loss after {epochs_text(config.epochs)} (SGD lr {config.lr}; a uniform guess scores ln 10 = {math.log(spec.NUM_CLASSES):.4f})",
            correct["train_loss"], mistaken if isinstance(mistaken, str) else mistaken["train_loss"],
            guarded_by(FRAMEWORK, "test_step_divides_the_gradient_by_the_batch_length"),
        ),
        test_accuracy=dict(correct=correct["test_accuracy"], mistaken=mistaken if isinstance(mistaken, str) else mistaken["test_accuracy"]),
    )


# --- Padding ---------------------------------------------------------------------------------
# Gluon's Conv2D pads 0 unless told: d2l's conv1 needs padding=2 to keep 28x28. Without it conv1
# gives 24x24 and pool2 16x4x4 = 256 features instead of 400. With in_units=400 spelled out,
# fc1 refuses them at the first forward; with d2l's Dense(120) (in_units inferred) Gluon takes
# the 256 silently and trains a smaller network.


def build_without_conv1_padding(variant: str = "classic", device: str = "cpu", fc1_in_units_inferred: bool = False):
    """The network with conv1 written `nn.Conv2D(6, kernel_size=5)`, assembled from the backend's
    own layer table. fc1_in_units_inferred: fc1 written `nn.Dense(120)`, as d2l writes it."""
    layers = []
    for layer in spec.layers(variant):
        if layer.name == "conv1":
            layer = replace(layer, hyper={**layer.hyper, "padding": 0})
        if layer.name == "fc1" and fc1_in_units_inferred:
            layer = replace(layer, hyper={**layer.hyper, "in_features": 0})  # Gluon: in_units=0 means "infer"
        layers.append(layer)
    model = nn.HybridSequential(prefix="lenet_")
    model.add(*[_LAYERS[layer.kind](layer.hyper, f"{layer.name}_") for layer in layers if layer.kind != _DONE_BY_DENSE])
    model.initialize(GLOROT_UNIFORM, ctx=resolve_device(device))
    model.hybridize(static_alloc=True, static_shape=True)
    return model


def shapes_before_fc1(model) -> dict[str, list[int]]:
    """Each block's per-example output shape, from the input up to the flatten fc1 reads."""
    x = mx.nd.zeros((1, *spec.INPUT_SHAPE), ctx=model_device(model))
    shapes = {}
    for block in model:
        if isinstance(block, nn.Dense):
            shapes[_DONE_BY_DENSE] = [int(x[0].size)]
            return shapes
        x = block(x)
        shapes[block.name] = list(x.shape[1:])
    raise ValueError("the model has no Dense layer")


def features_reaching_fc1(model) -> int:
    return shapes_before_fc1(model)[_DONE_BY_DENSE][0]


def first_forward_error(model) -> str | None:
    """The first line of what the first forward pass raises, or None when it runs."""
    try:
        model(mx.nd.zeros((2, *spec.INPUT_SHAPE), ctx=model_device(model))).wait_to_read()
    except mx.base.MXNetError as err:
        return error_line(err)
    return None


def measure_padding(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    variant, device = ctx.config.variant, ctx.config.device
    correct_model = backend.build(variant, device)
    mistaken_model = build_without_conv1_padding(variant, device)
    features = features_reaching_fc1(mistaken_model)
    error = first_forward_error(mistaken_model)
    inferred = build_without_conv1_padding(variant, device, fc1_in_units_inferred=True)
    inferred(mx.nd.zeros((1, *spec.INPUT_SHAPE), ctx=model_device(inferred))).wait_to_read()  # settles the deferred shapes
    mistaken = f"{features}, then fc1 raises: {error}" if error else float(features)
    return dict(
        record(
            differences.PADDING, "nn.Conv2D(6, kernel_size=5)", FRAMEWORK, "features reaching fc1",
            float(features_reaching_fc1(correct_model)), mistaken,
            guarded_by(FRAMEWORK, "test_conv1_padding_keeps_400_features_for_fc1"),
        ),
        shapes=dict(correct=shapes_before_fc1(correct_model), mistaken=shapes_before_fc1(mistaken_model)),
        # What d2l's own code (Dense without in_units) does with the same mistake: no error at all.
        with_in_units_inferred=dict(fc1_in_units=int(inferred[_fc1_index(inferred)].weight.shape[1]), param_count=backend.param_count(inferred)),
    )


def _fc1_index(model) -> int:
    return next(i for i, block in enumerate(model) if isinstance(block, nn.Dense))


# --- Optimizer defaults (Adam's eps) ---------------------------------------------------------
# MXNet folds Adam's bias correction into the learning rate and adds eps to sqrt(v); PyTorch and
# optax add eps to sqrt(v_hat) = sqrt(v / (1 - beta2^t)). In PyTorch's terms MXNet's eps is
# eps / sqrt(1 - beta2^t): about 30 times larger at step 1, shrinking to eps as t grows. It
# matters only where |gradient| is near eps, so the runs agree closely, never exactly.
# mx.optimizer.Adam has no switch for where eps goes.


class PyTorchEpsAdamTrainer(backend.Trainer):
    """MXNet's Adam with eps rescaled each step so that it lands where PyTorch adds it.

    MXNet's update is lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps'); with
    eps' = eps * sqrt(1 - beta2^t) that is lr * m_hat / (sqrt(v_hat) + eps), PyTorch's Adam.
    """

    def __init__(self, model, data, config: TrainConfig):
        super().__init__(model, data, config)
        self.eps, self.beta2, self.updates = config.eps, config.beta2, 0

    def step(self, batch_indices: np.ndarray):
        self.updates += 1
        self.optimizer.optimizer.epsilon = self.eps * math.sqrt(1 - self.beta2**self.updates)
        return super().step(batch_indices)


def oracle_step_losses(ctx: PitfallContext, config: TrainConfig, steps: int) -> list[float]:
    """The float64 numpy backend's first step losses (PyTorch-style Adam), same start, same batches."""
    oracle = get_backend("numpy")
    model = oracle.build(config.variant, "cpu")
    oracle.set_weights(model, ctx.initial)
    return step_losses(oracle.make_trainer(model, ctx.data, replace(config, device="cpu")), ctx.data, config, steps)


def measure_optimizer_defaults(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    steps = ctx.first_steps
    sgd, adam = ctx.recipe(optimizer="sgd", lr=DEFAULT_LR["sgd"]), ctx.recipe(optimizer="adam", lr=DEFAULT_LR["adam"])

    def mxnet_step_losses(trainer_class, config: TrainConfig) -> list[float]:
        return step_losses(trainer_class(runs.start(config), ctx.data, config), ctx.data, config, steps)

    sgd_gap = largest_gap(oracle_step_losses(ctx, sgd, steps), mxnet_step_losses(backend.Trainer, sgd))
    oracle_adam = oracle_step_losses(ctx, adam, steps)
    adam_gap = largest_gap(oracle_adam, mxnet_step_losses(backend.Trainer, adam))
    moved_eps_gap = largest_gap(oracle_adam, mxnet_step_losses(PyTorchEpsAdamTrainer, adam))
    return dict(
        record(
            differences.OPTIMIZER_DEFAULTS, "mx.optimizer.Adam(learning_rate=0.001, epsilon=1e-8)  # taken for torch.optim.Adam(lr=0.001, eps=1e-8)",
            FRAMEWORK, f"max step-loss gap vs PyTorch-style Adam over {steps} steps",
            sgd_gap, adam_gap, guarded_by(FRAMEWORK, "test_adam_adds_eps_before_the_bias_correction"),
        ),
        # No switch moves MXNet's eps; rescaling it every step (PyTorchEpsAdamTrainer) does, and
        # brings the gap down to the SGD gap's size: eps's place is the whole difference.
        gap_with_eps_moved_each_step=moved_eps_gap,
        note="correct: the same gap for plain SGD, where MXNet and the oracle do the same math; "
        "mx.optimizer.Adam has no option for where eps is added",
    )


# --- Batch order -----------------------------------------------------------------------------
# gluon.data.DataLoader(..., shuffle=True) draws its order from NumPy's GLOBAL generator
# (gluon.data.RandomSampler calls np.random.shuffle), not from mx.random: mx.random.seed alone
# does not make it repeatable, and no other framework draws the same order. The run is no worse,
# but no longer comparable step for step: it differs from the common order's run as a run with
# another seed does (the record's curves hold all three).


class DataLoaderOrderTrainer(backend.Trainer):
    """The backend's step fed the batches of `gluon.data.DataLoader(dataset, batch_size, shuffle=True)`.

    fit() still hands over the common order's batches; this trainer steps on the DataLoader's
    next batch instead (the same sizes: both keep the last, partial batch).
    """

    def __init__(self, model, data, config: TrainConfig):
        super().__init__(model, data, config)
        np.random.seed(config.seed)  # the seed a DataLoader user has to set: NumPy's, not mx.random's
        self.sampler = gluon.data.BatchSampler(gluon.data.RandomSampler(len(data.train_labels)), config.batch_size, "keep")
        self.batches = iter(())

    def step(self, batch_indices: np.ndarray):
        own_batch = next(self.batches, None)
        if own_batch is None:  # a new epoch: the sampler shuffles again
            self.batches = iter(self.sampler)
            own_batch = next(self.batches)
        return super().step(np.asarray(own_batch, np.int64))


def measure_batch_order(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    return batch_order_record(
        ctx, runs, DataLoaderOrderTrainer, "gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=128, shuffle=True)",
        guarded_by(FRAMEWORK, "test_common_batch_order_matches_the_oracle_own_shuffle_does_not"),
    )


# --- Dropout at evaluation -------------------------------------------------------------------
# Gluon decides dropout by a global mode, not by the block: inside autograd.record() or
# autograd.train_mode() every Dropout drops, also while "evaluating". The test accuracy then
# changes from one evaluation to the next, and is lower.


def accuracy_with_dropout_on(model, x: np.ndarray, y: np.ndarray) -> float:
    """The test accuracy as computed inside `with autograd.train_mode():` (dropout on)."""
    with autograd.train_mode():
        return evaluate_with(lambda chunk: backend.forward(model, chunk), x, y)[1]


def measure_dropout_at_evaluation(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    config = ctx.loss_recipe()  # the short modern run every framework's dropout pitfall trains
    model = runs.trained_model(config)
    x, y = ctx.test_x, ctx.data.test_labels
    predict_mode = [backend.evaluate(model, x, y)[1] for _ in range(DROPOUT_EVALUATIONS)]
    train_mode = [accuracy_with_dropout_on(model, x, y) for _ in range(DROPOUT_EVALUATIONS)]
    return dict(
        record(
            differences.DROPOUT_AT_EVALUATION, "with autograd.train_mode(): accuracy = evaluate(net, test_x, test_y)", FRAMEWORK,
            f"test-accuracy spread over {DROPOUT_EVALUATIONS} evaluations (modern, SGD, {epochs_text(config.epochs)})",
            spread(predict_mode), spread(train_mode), guarded_by(FRAMEWORK, "test_forward_runs_dropout_in_predict_mode"),
        ),
        accuracies=dict(predict_mode=predict_mode, train_mode=train_mode),
    )


# --- Data-parallel reduction -----------------------------------------------------------------
# The kvstore sums the contexts' gradients and step(n) divides by n. Each context backpropagating
# its shard's MEAN with step(number of contexts) makes the update the mean of the shard means,
# which weighs the examples of a smaller shard more (distributed.DataParallelTrainer). The
# one-process engine ("local", one context per replica) sums the same way as dist_sync and starts
# in seconds.


NAIVE_REDUCTION = "autograd.backward([l.mean() for l in shard_losses]); trainer.step(len(ctxs))"


class MeanOfShardMeansTrainer(distributed.DataParallelTrainer):
    """The data-parallel Trainer whose `reduce` hook back-propagates each shard's MEAN and steps by
    the number of shards; the replicas run it through ReplicaJob.trainer."""

    def reduce(self, losses, global_batch_size: int):
        return losses.mean(), self.group.shard_count

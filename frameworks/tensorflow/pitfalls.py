"""What each framework difference costs a TensorFlow/Keras user who mishandles it, measured for real.

Every mistake below is one a Keras user would make. Each is written as a small named function or a
Trainer subclass that changes only what the mistake changes, and each runs in TensorFlow from the
comparison's own start (ctx.initial, the common batch order), beside the correct run: the
backend's set_weights, build, Trainer and evaluate. measure() returns one common.pitfalls.record
per measurement; tests/test_pitfalls_tensorflow.py guards each difference.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import keras
import numpy as np
import tensorflow as tf

from common import differences, interface, spec
from common.data import FashionMNIST, scale_images
from common.interface import TrainConfig
from common.pitfalls import (
    PitfallContext,
    accuracy_curves,
    data_parallel_reduction,
    final_accuracy,
    final_accuracy_and_curve,
    guarded_by,
    largest_gap,
    max_abs_error_vs_oracle,
    record,
    spread,
)
from common.training import evaluate_with, step_losses
from common.weights import Weights, check_weights, oihw_to_hwio, to_channels_last
from frameworks import tensorflow as backend
from frameworks.numpy.train import Adam as OracleAdam
from frameworks.numpy.train import Trainer as OracleTrainer
from frameworks.tensorflow import distributed
from frameworks.tensorflow.convert import canonical_params
from frameworks.tensorflow.model import model_device, to_nhwc
from frameworks.tensorflow.train import Trainer

# The data-parallel reduction pitfall's engine: one that starts in seconds (see data_parallel_reduction)
REDUCTION_ENGINE = "mirrored"
KERAS_DEFAULT_EPSILON = 1e-7  # keras.optimizers.Adam's default; the recipe's (and PyTorch's, optax's, MXNet's) is 1e-8
DROPOUT_EVALUATIONS = 5


# --- Flatten order and kernel layout: PyTorch-layout weights loaded into Keras by hand ------------------


def assign_channels_last(model: keras.Model, arrays: Weights) -> None:
    """Assign arrays already in Keras's layout to the model's variables, by canonical name."""
    for key, variable in canonical_params(model).items():
        variable.assign(arrays[key])


def set_weights_without_flatten_permutation(model: keras.Model, weights: Weights) -> None:
    """Every tensor converted right except fc1, which gets only the transpose every dense layer needs.

    Keras's Flatten unrolls the N,H,W,C feature map in H,W,C order; PyTorch's fc1 columns expect
    C,H,W. Shapes still fit (400 either way), so nothing complains: fc1 simply multiplies each
    activation by a weight meant for another channel and pixel.
    """
    arrays = to_channels_last(check_weights(weights))
    arrays["fc1.weight"] = np.ascontiguousarray(weights["fc1.weight"].T)  # columns left in C,H,W order
    assign_channels_last(model, arrays)


def set_weights_with_reshaped_kernels(model: keras.Model, weights: Weights) -> None:
    """Every tensor converted right except the conv kernels, reshaped to H,W,I,O instead of transposed.

    A reshape keeps the numbers in memory order, so a weight meant for output channel o, input i and
    pixel (h, w) lands at some other (h, w, i, o): the shape is exactly what Keras wants and it
    assigns without a word.
    """
    arrays = to_channels_last(check_weights(weights))
    for layer in spec.param_layers():
        if layer.kind == "conv":
            kernel = weights[f"{layer.name}.weight"]
            arrays[f"{layer.name}.weight"] = kernel.reshape(oihw_to_hwio(kernel).shape)
    assign_channels_last(model, arrays)


# --- Padding: "same" where the spec pads nothing ------------------------------------------------------------


def with_same_padding_on_conv2(model: keras.Model) -> keras.Model:
    """A fresh copy of the model whose conv2 is Conv2D(16, 5, padding="same"), the rest unchanged.

    d2l pads conv1 by 2 ("same" for a 5x5 kernel) but not conv2; copying conv1's "same" keeps conv2's
    output at 14x14, pool2 gives 7x7, and Keras, which builds Dense for whatever arrives, gives fc1
    16*7*7 = 784 inputs instead of 400. No error: just another, larger network.
    """

    def clone(layer):
        config = layer.get_config()
        if layer.name == "conv2":
            config["padding"] = "same"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


# --- Loss: Keras's default from_logits=False on raw logits ----------------------------------------------------

# from_logits=False, Keras's default: expects probabilities. Summed, as the Trainer's `loss` hook
# returns a loss (the step divides by the batch size): the mistake is from_logits alone.
KERAS_DEFAULT_LOSS = keras.losses.SparseCategoricalCrossentropy(reduction="sum")


def cross_entropy_on_logits_as_probabilities(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """What Keras's default loss computes from fc3's raw logits: it clips them into [1e-7, 1 - 1e-7]
    and takes their log as if they were probabilities, so every logit below 1e-7 or above 1 passes
    no gradient and the network trains on a clipped, renormalized copy of its own outputs."""
    return KERAS_DEFAULT_LOSS(labels, logits)


class KerasDefaultLossTrainer(Trainer):
    """The backend's Trainer, with the loss a Keras user gets by leaving from_logits at its default
    in its `loss` hook."""

    loss = staticmethod(cross_entropy_on_logits_as_probabilities)


# --- Optimizer defaults: Adam's epsilon -----------------------------------------------------------------------


class KerasDefaultAdamTrainer(Trainer):
    """The backend's Trainer with Adam built as keras.optimizers.Adam(learning_rate=lr): epsilon 1e-7.

    Keras also adds epsilon to sqrt(v) before the bias correction, so at step t it weighs
    1 / sqrt(1 - beta2**t) times more than PyTorch's after it (about 30x at the first step); a ten
    times larger epsilon on top of that damps the first updates of every weight whose gradient is small.
    """

    def __init__(self, model: keras.Model, data: FashionMNIST, config: TrainConfig):
        super().__init__(model, data, config)
        with tf.device(self.device):  # replaced before the first step, so the traced step uses this one
            self.optimizer = keras.optimizers.Adam(learning_rate=config.lr)
            self.optimizer.build(self.variables)


class OracleAdamTrainer(OracleTrainer):
    """The yardstick for Adam: the numpy oracle backend's Adam (frameworks/numpy/train.py::Adam: eps
    after the bias correction, as PyTorch and optax write it, in float64), fed this framework's
    gradients of the same batches.

    The whole float64 oracle backend would compute the same updates, but its hand-written float64
    convolutions are far too slow for a measurement of many steps; driving its Adam with TensorFlow's
    gradients confines the comparison to Adam's update rule, which is what differs. It keeps the
    oracle Trainer's running totals (epoch_totals) and replaces its forward and backward pass.
    """

    def __init__(self, model: keras.Model, data: FashionMNIST, config: TrainConfig):
        self.model, self.data = model, data
        self.params = {key: value.astype(np.float64) for key, value in backend.get_weights(model).items()}
        self.adam = OracleAdam(config.lr, config.beta1, config.beta2, config.eps)
        self.loss_sum, self.correct = 0.0, 0

    def step(self, batch_indices) -> float:
        indices = np.asarray(batch_indices)
        x, y = scale_images(self.data.train_images[indices]), self.data.train_labels[indices]
        logits = backend.forward(self.model, x)
        loss, grads = backend.loss_and_grads(self.model, x, y)
        self.params = self.adam.update(self.params, grads)
        backend.set_weights(self.model, {key: value.astype(np.float32) for key, value in self.params.items()})
        self.loss_sum += loss * len(y)
        self.correct += int((logits.argmax(axis=1) == y).sum())
        return loss


# --- Batch order: TensorFlow's own shuffling instead of the common order ----------------------------------------


def tf_data_shuffled_batches(num_examples: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """Index batches in tf.data's order, as a Dataset pipeline (or model.fit(shuffle=True)) draws them:
    a new permutation from TensorFlow's own generator on every pass, not common.data.batch_order's."""
    return tf.data.Dataset.range(num_examples).shuffle(num_examples, seed=seed, reshuffle_each_iteration=True).batch(batch_size)


def train_in_tf_data_order(trainer: interface.Trainer, data: FashionMNIST, config: TrainConfig) -> list[float]:
    """config.epochs epochs of the backend's updates in tf.data's batch order; the per-epoch training losses."""
    n = len(data.train_labels)
    batches = tf_data_shuffled_batches(n, config.batch_size, config.seed)
    losses = []
    for _ in range(config.epochs):
        for indices in batches:  # each pass over the dataset reshuffles
            trainer.step(indices)
        loss_sum, _ = trainer.epoch_totals()
        losses.append(loss_sum / n)
    trainer.sync_model()
    return losses


# --- Dropout at evaluation -----------------------------------------------------------------------------------


def forward_in_training_mode(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Logits from model(x, training=True), the call a custom training loop makes, reused to evaluate:
    dropout stays on, so every evaluation drops another half of fc1's units."""
    with tf.device(model_device(model)):
        return model(tf.constant(to_nhwc(np.asarray(x, np.float32))), training=True).numpy()


# --- The measurements -------------------------------------------------------------------------------------------


class CorrectRuns:
    """The correct runs several pitfalls compare with, each trained at most once."""

    def __init__(self, ctx: PitfallContext):
        self.ctx = ctx

    def start(self, config: TrainConfig) -> keras.Model:
        """A model of config's variant holding the comparison's initial weights."""
        model = backend.build(config.variant, config.device)
        backend.set_weights(model, self.ctx.initial)
        return model

    @cached_property
    def _full_run(self) -> tuple[list[dict], Weights]:
        """The recipe trained here from ctx.initial: its history and its trained weights."""
        model = self.start(self.ctx.config)
        history = backend.train(model, self.ctx.data, self.ctx.config)
        return history, backend.get_weights(model)

    @property
    def full_history(self) -> list[dict]:
        """The comparison's own run of the recipe, or the same run trained here when it has none."""
        return self.ctx.correct_history if self.ctx.correct_history is not None else self._full_run[0]

    @cached_property
    def trained(self) -> Weights:
        """Trained weights to load both ways: the comparison's, else those of the full run trained here
        (the initializer and loss pitfalls need that run anyway), else a short run's."""
        if self.ctx.trained is not None:
            return self.ctx.trained
        if self.ctx.correct_history is None:
            return self._full_run[1]
        config = self.ctx.recipe(epochs=self.ctx.short_epochs)
        model = self.start(config)
        backend.train(model, self.ctx.data, config)
        return backend.get_weights(model)

    def final_accuracy(self) -> float:
        return self.full_history[-1]["test_accuracy"]

    @cached_property
    def short_modern_run(self) -> tuple[keras.Model, float]:
        """The correct run of ctx.loss_recipe() (the modern variant, SGD, short): the loss mistake is
        set against its accuracy, and its dropout layer is what the dropout mistake leaves on."""
        config = self.ctx.loss_recipe()
        model = self.start(config)
        return model, backend.train(model, self.ctx.data, config)[-1]["test_accuracy"]


def weight_loading_costs(ctx: PitfallContext, runs: CorrectRuns, difference: str, mistake: str, load_wrongly, test: str) -> list[dict]:
    """A weight-loading mistake against backend.set_weights: on the forward pass (vs the oracle, from
    ctx.initial) and on the test accuracy of trained weights."""
    model = backend.build(ctx.config.variant, ctx.config.device)

    def forward_error(load) -> float:
        load(model, ctx.initial)
        return max_abs_error_vs_oracle(backend.forward(model, ctx.probe_x), ctx.initial, ctx.probe_x, ctx.config.variant)

    def test_accuracy(load) -> float:
        load(model, runs.trained)
        return backend.evaluate(model, ctx.test_x, ctx.data.test_labels)[1]

    metrics = {"forward max abs error vs oracle": forward_error, "test accuracy of the trained weights": test_accuracy}
    return [record(difference, mistake, backend.name, metric, cost(backend.set_weights), cost(load_wrongly), test) for metric, cost in metrics.items()]


def measure_flatten_order(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_costs(
        ctx, runs, differences.FLATTEN_ORDER, 'model.get_layer("fc1").kernel.assign(torch_fc1_weight.T)  # columns still C,H,W',
        set_weights_without_flatten_permutation, guarded_by(backend.name, "test_flatten_order_needs_hwc_columns"),
    )


def measure_kernel_layout(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_costs(
        ctx, runs, differences.KERNEL_LAYOUT, 'model.get_layer("conv1").kernel.assign(kernel.reshape(5, 5, 1, 6))  # not .transpose(2, 3, 1, 0)',
        set_weights_with_reshaped_kernels, guarded_by(backend.name, "test_conv_kernels_need_transpose_not_reshape"),
    )


def features_reaching_fc1(rows) -> int:
    return next(row.shape[0] for row in rows if row.name == "flatten")


def measure_padding(ctx: PitfallContext) -> list[dict]:
    """Structural: the shapes and parameter count of the network with conv2 padded "same"."""
    correct_model = backend.build(ctx.config.variant, ctx.config.device)
    mistaken_model = with_same_padding_on_conv2(correct_model)
    correct_rows, mistaken_rows = backend.layer_summary(correct_model), backend.layer_summary(mistaken_model)
    mistake = 'keras.layers.Conv2D(16, 5, padding="same")  # conv2 pads nothing in the spec'
    test = guarded_by(backend.name, "test_same_padding_on_conv2_changes_shapes_and_parameters")
    parameters = record(differences.PADDING, mistake, backend.name, "parameters", backend.param_count(correct_model), backend.param_count(mistaken_model), test)
    # The layer table, C,H,W per example: where the two networks part.
    parameters["shapes"] = [dict(layer=a.name, correct=list(a.shape), mistaken=list(b.shape)) for a, b in zip(correct_rows, mistaken_rows)]
    features = record(
        differences.PADDING, mistake, backend.name, "features reaching fc1", features_reaching_fc1(correct_rows), features_reaching_fc1(mistaken_rows), test
    )
    return [parameters, features]


def measure_initializer(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """The full recipe from Keras's own initial weights instead of the canonical ones.

    Keras's default is already Glorot-uniform kernels and zero biases, the recipe's init, so this
    mistake only changes which Glorot draw the run starts from: the cost is a different start (no
    step-for-step parity with the other frameworks), not a worse network.
    """
    keras.utils.set_random_seed(ctx.config.seed)  # Keras's initializers draw from its global seed
    model = backend.build(ctx.config.variant, ctx.config.device)  # no set_weights: Keras's own draw
    mistaken, curve = final_accuracy_and_curve(Trainer(model, ctx.data, ctx.config), lambda x, y: backend.evaluate(model, x, y), ctx.data, ctx.config)
    return [
        record(
            differences.INITIALIZER, "model = keras.Sequential([...])  # trained from Keras's own glorot_uniform draw, no set_weights",
            backend.name, "final test accuracy", runs.final_accuracy(), mistaken,
            guarded_by(backend.name, "test_keras_default_init_is_glorot_but_not_the_canonical_start"),
            **accuracy_curves(runs.full_history, curve),
        )
    ]


def measure_loss(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """Keras's default from_logits=False on the logits, on the short modern run (common.pitfalls.PitfallContext.loss_recipe)."""
    config = ctx.loss_recipe()
    model = runs.start(config)
    mistaken = final_accuracy(KerasDefaultLossTrainer(model, ctx.data, config), lambda x, y: backend.evaluate(model, x, y), ctx.data, config)
    return [
        record(
            differences.LOSS, "keras.losses.SparseCategoricalCrossentropy()(y, logits)  # from_logits=False on raw logits",
            backend.name, f"final test accuracy ({config.variant} variant, SGD, {config.epochs} epoch(s))", runs.short_modern_run[1], mistaken,
            guarded_by(backend.name, "test_loss_needs_from_logits"),
        )
    ]


def measure_optimizer_defaults(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """The first ctx.first_steps Adam losses against the oracle's PyTorch-style Adam from the same start.

    Correct (epsilon=1e-8 passed explicitly) cannot be 0 against PyTorch-style Adam, because Keras
    adds epsilon before the bias correction: that gap is where epsilon sits, and it is what the
    correct number shows. The mistaken number adds Keras's default epsilon value on top.
    """
    config = ctx.recipe(optimizer="adam", lr=0.001)
    steps = ctx.first_steps
    oracle = step_losses(OracleAdamTrainer(runs.start(config), ctx.data, config), ctx.data, config, steps)
    correct = step_losses(Trainer(runs.start(config), ctx.data, config), ctx.data, config, steps)
    mistaken = step_losses(KerasDefaultAdamTrainer(runs.start(config), ctx.data, config), ctx.data, config, steps)

    return [
        record(
            differences.OPTIMIZER_DEFAULTS, "keras.optimizers.Adam(learning_rate=0.001)  # epsilon defaults to 1e-7, not 1e-8",
            backend.name, f"max step-loss gap to PyTorch-style Adam (numpy oracle's update) over {steps} Adam steps",
            largest_gap(correct, oracle), largest_gap(mistaken, oracle), guarded_by(backend.name, "test_adam_needs_explicit_epsilon"),
        )
    ]


def measure_batch_order(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """A short Adam run in tf.data's order against the same run in the common order, and the common
    order of the next seed to show how far batch order alone moves the result.

    Shuffling is not wrong: the cost is that runs in two frameworks stop being comparable step by
    step, and their results then differ as much as two seeds' do.
    """
    config = ctx.recipe(optimizer="adam", lr=0.001, epochs=ctx.short_epochs)

    def in_common_order(config: TrainConfig) -> list[dict]:
        return backend.train(runs.start(config), ctx.data, config)

    common, other_seed = in_common_order(config), in_common_order(replace(config, seed=config.seed + 1))
    model = runs.start(config)
    own_losses = train_in_tf_data_order(Trainer(model, ctx.data, config), ctx.data, config)
    own_accuracy = backend.evaluate(model, ctx.test_x, ctx.data.test_labels)[1]
    row = record(
        differences.BATCH_ORDER, "tf.data.Dataset.from_tensor_slices((x, y)).shuffle(60000, seed=0).batch(128)  # TensorFlow's own order",
        backend.name, "final test accuracy (Adam, short run)", common[-1]["test_accuracy"], own_accuracy,
        guarded_by(backend.name, "test_batch_order_is_the_common_one"),
    )
    row["curves"] = dict(
        common=[e["train_loss"] for e in common], own=own_losses, other_seed=[e["train_loss"] for e in other_seed]
    )
    row["other_seed_accuracy"] = other_seed[-1]["test_accuracy"]  # the common order of seed + 1: how far any other order moves it
    return [row]


def measure_dropout_at_evaluation(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """The short modern run's network, its test set evaluated repeatedly with dropout off
    (training=False) and left on (training=True)."""
    model = runs.short_modern_run[0]

    def accuracies(forward) -> list[float]:
        return [evaluate_with(lambda chunk: forward(model, chunk), ctx.test_x, ctx.data.test_labels)[1] for _ in range(DROPOUT_EVALUATIONS)]

    correct, mistaken = accuracies(backend.forward), accuracies(forward_in_training_mode)
    mistake, test = "logits = model(x_test, training=True)  # dropout still on", guarded_by(backend.name, "test_dropout_is_off_at_evaluation")
    costs = {"test-accuracy spread": spread, "mean test accuracy": lambda values: float(np.mean(values))}
    return [
        record(differences.DROPOUT_AT_EVALUATION, mistake, backend.name, f"{what} over {DROPOUT_EVALUATIONS} evaluations", cost(correct), cost(mistaken), test)
        for what, cost in costs.items()
    ]


NAIVE_REDUCTION = "loss = tf.nn.compute_average_loss(per_example_loss)  # no global_batch_size: each shard's own mean"


class MeanOfShardMeansTrainer(distributed.DataParallelTrainer):
    """Data-parallel reduction: the strategy SUMS the replicas' gradients, and
    tf.nn.compute_average_loss(per_example_loss) without global_batch_size divides each replica's
    loss by its own shard's size times the replicas, which makes the update the mean of the shard
    means. Only the `reduce` hook changes; the replicas run it through ReplicaJob.trainer."""

    def reduce(self, loss_sum: tf.Tensor, examples: tf.Tensor, global_batch_size: tf.Tensor) -> tf.Tensor:
        return tf.math.divide_no_nan(loss_sum, tf.cast(examples * self.strategy.num_replicas_in_sync, loss_sum.dtype))


def measure(ctx: PitfallContext) -> list[dict]:
    """Every TensorFlow/Keras pitfall, each measured against the correct run from the same start."""
    runs = CorrectRuns(ctx)
    return [
        *measure_flatten_order(ctx, runs),
        *measure_kernel_layout(ctx, runs),
        *measure_padding(ctx),
        *measure_initializer(ctx, runs),
        *measure_loss(ctx, runs),
        *measure_optimizer_defaults(ctx, runs),
        *measure_batch_order(ctx, runs),
        *measure_dropout_at_evaluation(ctx, runs),
        # The one-process engine: the reduction is the same as across workers, and it starts in seconds.
        data_parallel_reduction(ctx, backend, distributed.train_data_parallel, REDUCTION_ENGINE, MeanOfShardMeansTrainer, NAIVE_REDUCTION),
    ]

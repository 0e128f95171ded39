"""What each framework difference costs a TensorFlow/Keras user who mishandles it, measured for real.

Every mistake below is one a Keras user would make. Each is written as a small named function or a
Trainer subclass that changes only what the mistake changes, and each runs in TensorFlow from the
comparison's own start (ctx.initial, the common batch order), beside the correct run: the
backend's set_weights, build, Trainer and evaluate. Each measure_<difference>(ctx, runs) returns
its records (common.pitfalls.record); tests/test_pitfalls_tensorflow.py guards each difference.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common import differences, spec
from common.data import FashionMNIST, scale_images
from common.interface import TrainConfig
from common.pitfalls import (
    CorrectRuns,
    PitfallContext,
    accuracy_curves,
    batch_order_record,
    guarded_by,
    largest_gap,
    record,
    spread,
    weight_loading_records,
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


class TfDataOrderTrainer(Trainer):
    """The backend's Trainer fed tf.data's batches. fit() still hands over the common order's
    batches; this trainer steps on tf.data's next batch instead (the same sizes: tf.data keeps the
    last, partial batch too)."""

    def __init__(self, model: keras.Model, data: FashionMNIST, config: TrainConfig):
        super().__init__(model, data, config)
        self.dataset = tf_data_shuffled_batches(len(data.train_labels), config.batch_size, config.seed)
        self.batches = iter(())

    def step(self, batch_indices) -> tf.Tensor:
        own_batch = next(self.batches, None)
        if own_batch is None:  # a new pass over the dataset: tf.data shuffles again
            self.batches = iter(self.dataset)
            own_batch = next(self.batches)
        return super().step(own_batch.numpy())


# --- Dropout at evaluation -----------------------------------------------------------------------------------


def forward_in_training_mode(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Logits from model(x, training=True), the call a custom training loop makes, reused to evaluate:
    dropout stays on, so every evaluation drops another half of fc1's units."""
    with tf.device(model_device(model)):
        return model(tf.constant(to_nhwc(np.asarray(x, np.float32))), training=True).numpy()


# --- The measurements -------------------------------------------------------------------------------------------


def measure_flatten_order(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_records(
        ctx, runs, differences.FLATTEN_ORDER, 'model.get_layer("fc1").kernel.assign(torch_fc1_weight.T)  # columns still C,H,W',
        set_weights_without_flatten_permutation, guarded_by(backend.name, "test_flatten_order_needs_hwc_columns"),
    )


def measure_kernel_layout(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_records(
        ctx, runs, differences.KERNEL_LAYOUT, 'model.get_layer("conv1").kernel.assign(kernel.reshape(5, 5, 1, 6))  # not .transpose(2, 3, 1, 0)',
        set_weights_with_reshaped_kernels, guarded_by(backend.name, "test_conv_kernels_need_transpose_not_reshape"),
    )


def features_reaching_fc1(rows) -> int:
    return next(row.shape[0] for row in rows if row.name == "flatten")


def measure_padding(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
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
    mistaken, curve = runs.mistaken_run(ctx.config, model=model)
    return [
        record(
            differences.INITIALIZER, "model = keras.Sequential([...])  # trained from Keras's own glorot_uniform draw, no set_weights",
            backend.name, "final test accuracy", runs.epoch(ctx.config.epochs)["test_accuracy"], mistaken,
            guarded_by(backend.name, "test_keras_default_init_is_glorot_but_not_the_canonical_start"),
            **accuracy_curves(runs.full_history, curve),
        )
    ]


def measure_loss(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """Keras's default from_logits=False on the logits, on the short modern run (common.pitfalls.PitfallContext.loss_recipe)."""
    config = ctx.loss_recipe()
    mistaken, _ = runs.mistaken_run(config, KerasDefaultLossTrainer)
    return [
        record(
            differences.LOSS, "keras.losses.SparseCategoricalCrossentropy()(y, logits)  # from_logits=False on raw logits",
            backend.name, f"final test accuracy ({config.variant} variant, SGD, {config.epochs} epoch(s))", runs.history(config)[-1]["test_accuracy"], mistaken,
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


def measure_batch_order(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    return batch_order_record(
        ctx, runs, TfDataOrderTrainer, "tf.data.Dataset.from_tensor_slices((x, y)).shuffle(60000, seed=0).batch(128)  # TensorFlow's own order",
        guarded_by(backend.name, "test_batch_order_is_the_common_one"),
    )


def measure_dropout_at_evaluation(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    """The short modern run's network, its test set evaluated repeatedly with dropout off
    (training=False) and left on (training=True)."""
    model = runs.trained_model(ctx.loss_recipe())

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

"""What each framework difference costs in JAX/Flax when a user gets it wrong, measured for real.

Each measure_<difference>(ctx, runs) makes a mistake a Flax NNX + optax user would make, runs it
with JAX, and sets it beside the correct run from the same start (ctx.initial, the common batch
order, the backend's own Trainer; `runs` is common.pitfalls.CorrectRuns). Each mistake is one
small named function or Trainer subclass below; everything else is the backend's own code (build,
set_weights, forward, evaluate, Trainer), so a record measures the mistake and nothing more.
tests/test_pitfalls_jax.py guards each difference against its mistake.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import frameworks.jax as backend
from common import differences, spec
from common.interface import TrainConfig
from common.pitfalls import (
    CorrectRuns,
    PitfallContext,
    accuracy_curves,
    batch_order_record,
    epochs_text,
    error_line,
    guarded_by,
    max_abs_error_vs_oracle,
    record,
    spread,
    step_loss_curves,
    weight_loading_records,
)
from common.weights import Weights
from frameworks.jax import distributed
from frameworks.jax.model import _LAYERS, PRECISION, LeNet, model_device

# The data-parallel reduction pitfall's engine: one that starts in seconds (see data_parallel_reduction)
REDUCTION_ENGINE = "virtual_devices"
FRAMEWORK = "jax"
DROPOUT_EVALUATIONS = 5


def _place_like(model: LeNet, device) -> LeNet:
    """Commit every array of a model with swapped layers to one device, as backend.build does."""
    nnx.update(model, jax.device_put(nnx.state(model), device))
    return model


# ---------------------------------------------------------------------------------------------
# Flatten order. Flax flattens an N,H,W,C map in H,W,C order; the canonical fc1 expects C,H,W.
# Transposing fc1's (out, in) matrix to Flax's (in, out) makes every shape fit, so nothing raises:
# each of the 400 features is simply multiplied by the weight meant for another pixel and channel.


def set_weights_without_flatten_permutation(model: LeNet, weights: Weights) -> None:
    """backend.set_weights, except that fc1's columns keep the canonical C,H,W order (no hwc_columns)."""
    backend.set_weights(model, weights)
    model.fc1.kernel[...] = jax.device_put(np.ascontiguousarray(weights["fc1.weight"].T), model_device(model))


# Kernel layout. Flax convolves with H,W,I,O kernels; the canonical ones are O,I,H,W. A reshape to
# (5, 5, 1, 6) has the right shape but keeps the numbers in their O,I,H,W order, so each weight
# lands on another tap and channel; only a transpose moves them. No error either.


def set_weights_with_reshaped_kernels(model: LeNet, weights: Weights) -> None:
    """backend.set_weights, except that each conv kernel is reshaped to H,W,I,O instead of transposed."""
    backend.set_weights(model, weights)
    for layer in spec.param_layers(model.variant):
        if layer.kind == "conv":
            kernel = getattr(model, layer.name).kernel
            kernel[...] = jax.device_put(weights[f"{layer.name}.weight"].reshape(kernel.shape), model_device(model))


def measure_flatten_order(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_records(
        ctx, runs, differences.FLATTEN_ORDER, 'model.fc1.kernel[...] = weights["fc1.weight"].T', set_weights_without_flatten_permutation,
        guarded_by(FRAMEWORK, "test_flatten_order_needs_hwc_columns"),
    )


def measure_kernel_layout(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    return weight_loading_records(
        ctx, runs, differences.KERNEL_LAYOUT, "model.conv1.kernel[...] = w.reshape(5, 5, 1, 6)", set_weights_with_reshaped_kernels,
        guarded_by(FRAMEWORK, "test_kernel_layout_needs_a_transpose"),
    )


# ---------------------------------------------------------------------------------------------
# Padding. Flax names padding instead of counting pixels. conv1 pads 2 ("SAME" for a 5x5 kernel);
# copying that line for conv2, which pads nothing ("VALID"), keeps its 10x10 map at 14x14, so pool2
# gives 7x7 and the flatten 16*7*7 = 784 features. Flax does not check a layer's input width when
# it is built, only at the matmul: nnx.Linear(400, 120) raises on the first batch.


def build_with_same_padding_on_conv2(variant: str = "classic", device: str = "cpu") -> LeNet:
    """The backend's LeNet with conv2 built as conv1 is: padding 2 pixels, which Flax spells "SAME"."""
    model = backend.build(variant, device)
    home = model_device(model)
    conv2 = next(layer for layer in spec.layers(variant) if layer.name == "conv2")
    model.conv2 = _LAYERS["conv"]({**conv2.hyper, "padding": 2}, nnx.Rngs(0))
    return _place_like(model, home)


def layer_shapes_until_error(model: LeNet) -> tuple[list[tuple[str, tuple[int, ...]]], str | None]:
    """Each layer's native per-example output shape for one blank image, up to the layer that raises, and its error."""
    x = jnp.zeros((1, *spec.INPUT_SHAPE[1:], spec.INPUT_SHAPE[0]), jnp.float32)  # N,H,W,C
    shapes = []
    for name, layer in model.layers():
        try:
            x = layer(x)
        except (TypeError, ValueError) as error:
            return shapes, f"{name}: {error_line(error)}"
        shapes.append((name, tuple(x.shape[1:])))
    return shapes, None


def features_reaching(shapes: list[tuple[str, tuple[int, ...]]], layer_name: str = "flatten") -> int:
    return dict(shapes)[layer_name][0]


def measure_padding(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    mistake = 'nnx.Conv(6, 16, (5, 5), padding="SAME", rngs=rngs)  # conv2'
    test = guarded_by(FRAMEWORK, "test_padding_same_on_conv2_breaks_fc1")
    variant = ctx.config.variant
    correct, mistaken = backend.build(variant, ctx.config.device), build_with_same_padding_on_conv2(variant, ctx.config.device)
    correct_shapes, _ = layer_shapes_until_error(correct)
    mistaken_shapes, _ = layer_shapes_until_error(mistaken)
    backend.set_weights(correct, ctx.initial)
    backend.set_weights(mistaken, ctx.initial)  # every parameter shape still fits: only the activations grow
    correct_error = max_abs_error_vs_oracle(backend.forward(correct, ctx.probe_x), ctx.initial, ctx.probe_x, variant)
    try:
        mistaken_error = max_abs_error_vs_oracle(backend.forward(mistaken, ctx.probe_x), ctx.initial, ctx.probe_x, variant)
    except (TypeError, ValueError) as error:
        mistaken_error = error_line(error)
    features = record(
        differences.PADDING, mistake, FRAMEWORK, "features reaching fc1",
        float(features_reaching(correct_shapes)), float(features_reaching(mistaken_shapes)), test,
    )
    features["shapes"] = {"correct": correct_shapes, "mistaken": mistaken_shapes}
    forward = record(
        differences.PADDING, mistake, FRAMEWORK, "forward max abs error vs oracle (initial weights, probe batch)", correct_error, mistaken_error, test
    )
    return [features, forward]


# ---------------------------------------------------------------------------------------------
# Initializer. Left out, Flax's kernel_init is lecun_normal (variance 1/fan_in, zero biases), not
# the Xavier-uniform the d2l recipe starts from. Shapes, loss and optimizer are all right; only the
# starting point differs, and a sigmoid network's progress under plain SGD depends on where it
# starts, so the effect shows only after the full recipe.


def build_with_flax_default_init(variant: str, seed: int, device: str = "cpu") -> LeNet:
    """The backend's LeNet with every conv and dense layer built as Flax builds it by default: no kernel_init."""
    model = backend.build(variant, device)
    home = model_device(model)
    rngs = nnx.Rngs(seed)
    for layer in spec.param_layers(variant):
        h = layer.hyper
        if layer.kind == "conv":
            k = h["kernel_size"]
            flax_default = nnx.Conv(
                h["in_channels"], h["out_channels"], (k, k), padding=spec.padding_name(h).upper(), precision=PRECISION, rngs=rngs
            )
        else:
            flax_default = nnx.Linear(h["in_features"], h["out_features"], precision=PRECISION, rngs=rngs)
        setattr(model, layer.name, flax_default)
    return _place_like(model, home)


def measure_initializer(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    # Trained as the backend's own LeNet holding those numbers: the same compiled step as the correct run.
    flax_default = backend.get_weights(build_with_flax_default_init(ctx.config.variant, ctx.config.seed, ctx.config.device))
    mistaken, curve = runs.mistaken_run(ctx.config, model=runs.start(ctx.config, flax_default))
    return record(
        differences.INITIALIZER, 'nnx.Conv(1, 6, (5, 5), padding="SAME", rngs=nnx.Rngs(seed))  # no kernel_init', FRAMEWORK,
        f"final test accuracy ({epochs_text(ctx.config.epochs)}, the d2l recipe)", runs.epoch(ctx.config.epochs)["test_accuracy"], mistaken,
        guarded_by(FRAMEWORK, "test_initializer_is_the_canonical_start"), **accuracy_curves(runs.full_history, curve),
    )


# ---------------------------------------------------------------------------------------------
# Loss. optax's losses are per example; the recipe's loss is their mean. Summing them makes every
# gradient batch-size (128) times larger, i.e. SGD at lr 12.8 instead of 0.1, with no error at all.


def summed_loss(losses: jax.Array, weight: jax.Array) -> jax.Array:
    """optax's per-example losses summed, not averaged: the objective a user writes as
    optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()."""
    return jnp.sum(weight * losses)


class SummedLossTrainer(backend.Trainer):
    """The backend's Trainer with summed_loss in its `objective` hook. The history still reports the
    mean per example (the step does), so the curves stay comparable."""

    objective = staticmethod(summed_loss)


def measure_loss(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    # The short modern run (PitfallContext.loss_recipe): its ReLUs are unbounded, so steps 128 times
    # too large blow the loss up within it, where the classic sigmoids would saturate and stall.
    config = ctx.loss_recipe()
    mistaken, _ = runs.mistaken_run(config, SummedLossTrainer)
    return record(
        differences.LOSS, "optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()", FRAMEWORK,
        f"final test accuracy, or the divergence (modern, SGD, {epochs_text(config.epochs)})", runs.history(config)[-1]["test_accuracy"], mistaken,
        guarded_by(FRAMEWORK, "test_loss_is_the_batch_mean"),
        **step_loss_curves(
            backend.Trainer(runs.start(config), ctx.data, config), SummedLossTrainer(runs.start(config), ctx.data, config), ctx.data, config,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Batch order. Every framework trains on the same batches (common.data.batch_order) so that step
# losses can be compared to 1e-4. A user's own shuffle gives another order: from the first step the
# run matches no other framework, so a real difference between frameworks can no longer be told from
# the noise of the order (the record's "other_seed" curve shows how far another order moves a run).
# JAX keys are values, not stateful generators: the line below, run at the top of every epoch,
# returns the same permutation each time.


def user_permutation(seed: int, num_examples: int) -> np.ndarray:
    return np.asarray(jax.random.permutation(jax.random.key(seed), num_examples))


class UserShuffledTrainer(backend.Trainer):
    """The backend's Trainer fed from the user's own shuffle: the common loop hands it a batch, and it
    trains on the batch at the same position of jax.random.permutation(jax.random.key(seed), n)."""

    def __init__(self, model: LeNet, data, config):
        super().__init__(model, data, config)
        self.num_examples, self.seed = len(data.train_labels), config.seed
        self.position, self.order = self.num_examples, None

    def step(self, batch_indices: np.ndarray) -> jax.Array:
        if self.position >= self.num_examples:  # a new epoch: the user shuffles again
            self.order, self.position = user_permutation(self.seed, self.num_examples), 0
        own = self.order[self.position : self.position + len(batch_indices)]
        self.position += len(batch_indices)
        return super().step(own)


def measure_batch_order(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    return batch_order_record(
        ctx, runs, UserShuffledTrainer, "perm = jax.random.permutation(jax.random.key(seed), n)", guarded_by(FRAMEWORK, "test_batch_order_is_the_common_one")
    )


# ---------------------------------------------------------------------------------------------
# Dropout at evaluation. The modern variant drops half of fc1's outputs while training. Evaluated
# with dropout still on (model.train() and no model.eval(), or the training view), every test pass
# draws new masks: the accuracy is lower and changes from one evaluation to the next.


def training_mode(model: LeNet, stream: int) -> LeNet:
    """A copy of the model as model.train() leaves it: dropout on, its masks drawn from `stream`."""
    copy = nnx.view(nnx.clone(model), deterministic=False)
    nnx.reseed(copy, dropout=stream)
    return copy


def measure_dropout_at_evaluation(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    model = runs.trained_model(ctx.loss_recipe())  # the loss mistake's correct run: modern, so it has dropout
    x, y = ctx.test_x, ctx.data.test_labels
    correct = [float(backend.evaluate(model, x, y)[1]) for _ in range(DROPOUT_EVALUATIONS)]
    mistaken = [float(backend.evaluate(training_mode(model, stream), x, y)[1]) for stream in range(DROPOUT_EVALUATIONS)]
    result = record(
        differences.DROPOUT_AT_EVALUATION, "model.train()  # and no model.eval() before the test set", FRAMEWORK,
        f"test-accuracy spread over {DROPOUT_EVALUATIONS} evaluations (modern, SGD, short run)", spread(correct), spread(mistaken),
        guarded_by(FRAMEWORK, "test_dropout_is_off_at_evaluation"),
    )
    result["accuracies"] = {"correct": correct, "mistaken": mistaken}
    return result


# ---------------------------------------------------------------------------------------------
# Data-parallel reduction. jit derives the all-reduces from a loss over the whole sharded batch, so
# the global mean is what the program says (train.py::mean_over_real_examples). The mistake a pmap
# or shard_map user makes is each device's own mean, then lax.pmean of those: with unequal shards
# that weighs the examples of a smaller shard more. The one-process engine (N virtual CPU devices)
# runs the same program as the multi-process one and starts in seconds.


NAIVE_REDUCTION = 'loss = jax.lax.pmean(losses.mean(), "data")  # each device\'s shard mean, then their mean'


@functools.cache
def mean_of_shard_means(replicas: int):
    """The objective that takes each device's mean over its own real examples, then the mean of
    those, as lax.pmean of per-device means gives (one function per replica count: jit compiles
    the step once for it)."""

    def objective(losses: jax.Array, weight: jax.Array) -> jax.Array:
        per_device = (weight * losses).reshape(replicas, -1).sum(axis=1) / weight.reshape(replicas, -1).sum(axis=1)
        return jnp.mean(per_device)

    return objective


class MeanOfShardMeansTrainer(distributed.DataParallelTrainer):
    """The data-parallel Trainer with mean_of_shard_means in its `objective` hook; the replicas run
    it through ReplicaJob.trainer."""

    def __init__(self, model: LeNet, data, config: TrainConfig, mesh):
        super().__init__(model, data, config, mesh)
        self.objective = mean_of_shard_means(self.replicas)

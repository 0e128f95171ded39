"""What each framework difference costs in PyTorch when a user gets it wrong: the mistakes, made for real.

Each measure_<difference>(ctx, runs) makes a mistake a PyTorch user would make, with PyTorch, from
the comparison's own start (ctx.initial) on the common batch order, and sets it beside the correct
run (common.pitfalls.CorrectRuns): the backend's own build, set_weights, forward and Trainer,
unchanged. Each mistake is a small named function or Trainer subclass below that changes only what
the mistake changes; tests/test_pitfalls_pytorch.py guards each difference (the correct handling
matches the oracle, the mistake does not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from common import differences, spec
from common.data import FashionMNIST
from common.interface import LayerRow, TrainConfig
from common.pitfalls import (
    NOT_MEASURED,
    CorrectRuns,
    PitfallContext,
    accuracy_curves,
    batch_order_record,
    error_line,
    guarded_by,
    max_abs_error_vs_oracle,
    record,
    spread,
    step_loss_curves,
)
from common.training import evaluate_with
from frameworks import pytorch as backend
from frameworks.pytorch import distributed
from frameworks.pytorch.train import Trainer

# The data-parallel reduction pitfall's engine: torchrun with DDP over gloo, as the comparison runs it
REDUCTION_ENGINE = distributed.DEFAULT_ENGINE
EVALUATIONS = 5  # test-set evaluations of one trained model, for the dropout pitfall


# ---------------------------------------------------------------------------------------------
# The mistakes
# ---------------------------------------------------------------------------------------------


def reinitialize_with_pytorch_defaults(model: nn.Module, seed: int) -> nn.Module:
    """Initializer: every conv and linear layer back to PyTorch's own init, as a model gets it
    when nobody sets one: Kaiming-uniform with a=sqrt(5) (a bound of 1/sqrt(fan_in)) and uniform
    biases in the same range, instead of Xavier weights and zero biases. For fc1 to fc3 that is a
    much narrower range than Xavier's, so the sigmoid network starts even flatter, nearer the
    plateau at ln(10) that d2l's LeNet already idles on for its first epochs."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
    return model


def softmax_before_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss: F.cross_entropy takes LOGITS and applies log-softmax itself. Given probabilities it
    softmaxes them a second time: every input lies in [0, 1], so the loss cannot fall below
    log(1 + 9/e) and its gradient shrinks as the model grows confident. It trains slowly, or not
    at all. Summed over the batch, as the Trainer's `loss` hook returns it."""
    return F.cross_entropy(F.softmax(logits, dim=1), labels, reduction="sum")


class SoftmaxBeforeLossTrainer(Trainer):
    """The backend's Trainer with softmax_before_loss in its `loss` hook."""

    loss = staticmethod(softmax_before_loss)


class SummedLossTrainer(Trainer):
    """Loss: the batch's SUM, not its mean (F.cross_entropy(logits, y, reduction="sum") back-
    propagated as it is). The gradient is batch-size times larger, so SGD with the recipe's lr of
    0.1 takes steps of an lr of 12.8 (and a smaller one on the last, partial batch). Only the
    Trainer's `reduce` hook changes: the history still gets the batch's MEAN loss, so the common
    loop's divergence check judges the per-example loss, as for every run."""

    def reduce(self, loss_sum: torch.Tensor, examples: int, global_batch_size: int) -> torch.Tensor:
        return loss_sum


NAIVE_REDUCTION = "F.cross_entropy(model(x_shard), y_shard).backward()  # each replica's shard mean, DDP averages"


class MeanOfShardMeansTrainer(distributed.DataParallelTrainer):
    """Data-parallel reduction: each replica back-propagates its shard's MEAN loss, and DDP averages
    the replicas' gradients with equal weights: the update is the mean of the shard means, which
    weighs the examples of a smaller shard more (43, 43 and 42 of 128 over 3 replicas). Only the
    `reduce` hook changes; the replicas run it through ReplicaJob.trainer."""

    def reduce(self, loss_sum: torch.Tensor, examples: int, global_batch_size: int) -> torch.Tensor:
        return loss_sum * (1 / max(examples, 1))


def build_without_conv1_padding(variant: str = "classic", device: str = "cpu") -> nn.Sequential:
    """Padding: the spec's network with conv1 written as nn.Conv2d(1, 6, 5), its padding forgotten.
    The weights keep their shapes (padding has no parameters), so loading them raises nothing; but
    conv1 now yields 24x24 maps, the flatten 16*4*4 = 256 features, and fc1 wants 400: PyTorch only
    notices at fc1, on the first forward pass."""
    model = backend.build(variant, device)
    model.conv1 = nn.Conv2d(1, 6, 5).to(backend.model_device(model), memory_format=torch.channels_last)
    return model


def shapes_before_fc1(model: nn.Sequential) -> list[LayerRow]:
    """The model's layer table up to the flatten, the part a forward pass gets through (fc1 is the
    layer that reads the flatten)."""
    names = [layer_name for layer_name, _ in model.named_children()]
    return backend.layer_summary(model[: names.index(next(iter(spec.flattened_inputs())))])


class DataLoaderShuffleTrainer(Trainer):
    """Batch order: the backend's Trainer fed by the user's own shuffling, a DataLoader with
    shuffle=True and a seeded generator, instead of the common batch order.

    The common loop still drives the epochs and hands step() the common batch; this trainer
    swaps it for the batch at the same position of its DataLoader's epoch (same count, same
    sizes: the last batch is partial in both). Every framework's own generator orders the
    examples differently, so two frameworks' runs part from the first step on, as two seeds of
    one framework do: the common order (common.data.batch_order) is what makes them comparable
    step by step."""

    def __init__(self, model, data: FashionMNIST, config: TrainConfig):
        super().__init__(model, data, config)
        self.loader = DataLoader(
            range(len(data.train_labels)), batch_size=config.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.epoch_batches: Iterator[torch.Tensor] = iter(())

    def step(self, batch_indices: np.ndarray) -> torch.Tensor:
        own = next(self.epoch_batches, None)
        if own is None:  # the common loop has started a new epoch: so does the DataLoader
            self.epoch_batches = iter(self.loader)
            own = next(self.epoch_batches)
        return super().step(own.numpy())


@torch.no_grad()
def forward_in_train_mode(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Dropout at evaluation: logits from a model left in train mode after training (no
    model.eval()). nn.Dropout then still zeroes half of fc1's outputs and doubles the rest, a new
    mask on every call: the same weights score differently each time, and worse."""
    model.train()
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(backend.model_device(model))).cpu().numpy()


@contextmanager
def fp32_precision(precision: str):
    """Float32 on GPUs: cuDNN convolutions and cuBLAS matmuls in `precision` ("tf32" or "ieee")
    for the duration, restored afterwards. PyTorch runs float32 convolutions in TF32 by default
    on Ampere and newer GPUs (10 mantissa bits); the backend sets "ieee" when it loads."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = precision
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def gpu_forward_error(weights, x: np.ndarray, precision: str, variant: str = "classic") -> float:
    """Max abs difference between the GPU's logits, computed with `precision`, and the float64 oracle's."""
    with fp32_precision(precision):
        model = backend.build(variant, "gpu")
        backend.set_weights(model, weights)
        return max_abs_error_vs_oracle(backend.forward(model, x), weights, x, variant)


def has_tf32() -> bool:
    """TF32 exists on NVIDIA GPUs of compute capability 8.0 (Ampere) and newer."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def recipe_text(config: TrainConfig) -> str:
    return f"{config.epochs} epoch(s), {config.variant}, {config.optimizer} lr {config.lr:g}"


def measure_initializer(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    model = reinitialize_with_pytorch_defaults(backend.build(ctx.config.variant, ctx.config.device), ctx.config.seed)
    mistaken, curve = runs.mistaken_run(ctx.config, model=model)
    return record(
        differences.INITIALIZER, "model = LeNet()  # no xavier_uniform_/zeros_: PyTorch's Kaiming-uniform(a=sqrt(5)), nonzero biases", backend.name,
        f"final test accuracy ({recipe_text(ctx.config)})", runs.epoch(ctx.config.epochs)["test_accuracy"], mistaken,
        guarded_by(backend.name, "test_initializer_is_xavier_not_pytorch_default"), **accuracy_curves(runs.full_history, curve),
    )


def measure_loss(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    config = ctx.loss_recipe()
    correct = runs.history(config)[-1]["test_accuracy"]
    metric = f"final test accuracy, or the divergence ({recipe_text(config)})"
    return [
        record(
            differences.LOSS, "F.cross_entropy(F.softmax(logits, dim=1), y)", backend.name, metric,
            correct, runs.mistaken_run(config, SoftmaxBeforeLossTrainer)[0], guarded_by(backend.name, "test_loss_takes_logits_not_probabilities"),
        ),
        # Steps 128 times too large: the modern variant's unbounded ReLUs blow the loss up within the
        # short run (the classic sigmoids would saturate and stall instead).
        record(
            differences.LOSS, 'F.cross_entropy(logits, y, reduction="sum")', backend.name, metric,
            correct, runs.mistaken_run(config, SummedLossTrainer)[0], guarded_by(backend.name, "test_loss_is_the_batch_mean_not_the_sum"),
            **step_loss_curves(Trainer(runs.start(config), ctx.data, config), SummedLossTrainer(runs.start(config), ctx.data, config), ctx.data, config),
        ),
    ]


def measure_padding(ctx: PitfallContext, runs: CorrectRuns) -> list[dict]:
    variant, device, x = ctx.config.variant, ctx.config.device, ctx.probe_x
    correct_model, mistaken_model = runs.start(ctx.config), build_without_conv1_padding(variant, device)
    backend.set_weights(mistaken_model, ctx.initial)  # accepted: padding changes no parameter's shape
    correct_rows, mistaken_rows = shapes_before_fc1(correct_model), shapes_before_fc1(mistaken_model)
    maps = ", ".join(f"{row.name} {','.join(map(str, row.shape))}" for row in mistaken_rows if row.name.startswith(("conv", "pool")))
    correct_error = max_abs_error_vs_oracle(backend.forward(correct_model, x), ctx.initial, x, variant)
    try:
        mistaken_error = max_abs_error_vs_oracle(backend.forward(mistaken_model, x), ctx.initial, x, variant)
    except RuntimeError as err:  # what PyTorch raises at fc1
        mistaken_error = error_line(err)
    mistake = "nn.Conv2d(1, 6, 5)  # conv1 without padding=2"
    test = guarded_by(backend.name, "test_conv1_is_padded_by_2")
    return [
        record(differences.PADDING, mistake, backend.name, f"features reaching fc1 (mistaken: {maps})",
               float(correct_rows[-1].shape[0]), float(mistaken_rows[-1].shape[0]), test),
        record(differences.PADDING, mistake, backend.name, f"forward logits, max abs error vs oracle ({len(x)} test images), or the error raised",
               correct_error, mistaken_error, test),
    ]


def measure_batch_order(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    return batch_order_record(
        ctx, runs, DataLoaderShuffleTrainer, "DataLoader(train_set, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))",
        guarded_by(backend.name, "test_batches_follow_the_common_order"),
    )


def measure_dropout_at_evaluation(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    config = ctx.loss_recipe()  # the loss mistake's correct run: modern, so it has dropout
    model = runs.trained_model(config)
    test_x, test_y = ctx.test_x, ctx.data.test_labels
    in_eval_mode = [backend.evaluate(model, test_x, test_y)[1] for _ in range(EVALUATIONS)]
    in_train_mode = [evaluate_with(lambda chunk: forward_in_train_mode(model, chunk), test_x, test_y)[1] for _ in range(EVALUATIONS)]
    return record(
        differences.DROPOUT_AT_EVALUATION, "logits = model(x)  # evaluated without model.eval() after training", backend.name,
        f"test-accuracy spread over {EVALUATIONS} evaluations ({recipe_text(config)}; "
        f"mean accuracy {np.mean(in_eval_mode):.4f} in eval mode, {np.mean(in_train_mode):.4f} in train mode)",
        spread(in_eval_mode), spread(in_train_mode), guarded_by(backend.name, "test_evaluation_turns_dropout_off"),
    )


def measure_tf32(ctx: PitfallContext, runs: CorrectRuns) -> dict:
    mistake = 'torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "tf32"  # PyTorch\'s default for convs'
    test = guarded_by(backend.name, "test_float32_means_ieee_not_tf32")
    if not has_tf32():
        return record(
            differences.TF32, mistake, backend.name, "forward max abs error vs oracle (needs an Ampere or newer GPU)",
            NOT_MEASURED, NOT_MEASURED, test,
        )
    x, variant = ctx.probe_x, ctx.config.variant
    return record(
        differences.TF32, mistake, backend.name,
        f"forward max abs error vs oracle on {torch.cuda.get_device_name()} ({len(x)} test images)",
        gpu_forward_error(ctx.initial, x, "ieee", variant), gpu_forward_error(ctx.initial, x, "tf32", variant), test,
    )

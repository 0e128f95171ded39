"""What each framework difference costs when it is mishandled: the shared part of the measurements.

Each backend's pitfalls.py makes the mistakes a user of its framework would make, for real, and
measures each against the correct run from the same start: measure_<key>(ctx, runs) for a registry
entry's key (common/differences.py). This module holds what they share: the context they run in,
the one cache of correct runs (CorrectRuns), the order they run in (measure, the registry's), the
record every measurement produces, the data-parallel measurement, and small measuring helpers.
The harness runs them with `compare.py --pitfalls` (worker phase "pitfalls") and the report's
lesson ("The differences") shows them beside each difference's code (common/report.py).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common import differences, reference
from common.data import FashionMNIST, load_fashion_mnist, scale_images
from common.data_parallel import ReplicaJob
from common.interface import DEFAULT_LR, MAX_SEED, TrainConfig
from common.parity import PROBE_SIZE
from common.training import TrainingDiverged, fit, step_losses
from common.weights import Weights, save_weights

NOT_MEASURED = "not measured"
ERROR_CHARS = 150  # a raised error is recorded as its first line, cut to this length
# The data-parallel pitfall trains 3 replicas on the first 600 training images: four batches of
# 128 (shards of 43, 43, 42) and a last one of 88 (30, 29, 29), so no shard has its neighbours' size.
REDUCTION_REPLICAS = 3
REDUCTION_TRAIN_SUBSET = 600
REDUCTION_TEST_SUBSET = 256
# What frameworks/<name>/pitfalls.py exports (frameworks.get_part checks it), besides its measure_<key>
# functions (see measure): the data-parallel engine, mistaken trainer and mistake's line that the
# shared reduction measurement runs.
PITFALLS_API = ("REDUCTION_ENGINE", "MeanOfShardMeansTrainer", "NAIVE_REDUCTION")
# The backends with a pitfalls.py: the numpy oracle has no framework to mishandle.
FRAMEWORKS_WITH_PITFALLS = ("pytorch", "tensorflow", "jax", "mxnet")
# One test guards the reduction in every framework: it runs each framework's engine both ways.
REDUCTION_TEST = differences.REDUCTION_TEST


@dataclass(frozen=True)
class PitfallContext:
    """What a backend's measure_<difference>(ctx, runs) functions get.

    config is the comparison's recipe (classic, SGD lr 0.1, batch 128, its epochs and seed) and
    initial its canonical starting weights. When this framework's comparison run finished,
    correct_history is that run's history (the correct run the initializer and loss pitfalls are
    set against, trained on the same data for config.epochs) and trained its canonical trained
    weights (which the flatten and kernel pitfalls score); else both are None and a pitfall trains
    its own correct run. short_epochs is for effects that show at once (divergence, shuffling).
    """

    data: FashionMNIST
    config: TrainConfig
    initial: Weights
    trained: Weights | None = None
    correct_history: list[dict] | None = None
    short_epochs: int = 1
    first_steps: int = 50  # how many first steps a step-by-step comparison covers (Adam's eps, the data-parallel reduction)

    @property
    def probe_x(self) -> np.ndarray:
        return scale_images(self.data.test_images[:PROBE_SIZE])

    @property
    def probe_y(self) -> np.ndarray:
        return self.data.test_labels[:PROBE_SIZE]

    @property
    def test_x(self) -> np.ndarray:
        return scale_images(self.data.test_images)

    def recipe(self, **changes) -> TrainConfig:
        """The comparison's recipe with changes, e.g. recipe(epochs=ctx.short_epochs)."""
        return replace(self.config, **changes)

    def loss_recipe(self) -> TrainConfig:
        """The short run a loss mistake is measured on: the modern variant under the recipe's SGD.

        Its ReLUs learn within one epoch, while d2l's sigmoid LeNet sits on the plateau of a uniform
        guess for its first epochs: a short classic run would set chance against chance and show
        nothing, and the full recipe would cost ten epochs per mistake.
        """
        return self.recipe(variant="modern", epochs=self.short_epochs)

    def adam_recipe(self) -> TrainConfig:
        """The short Adam run (PyTorch's defaults, lr 0.001) the batch-order mistake is measured on:
        unlike the classic recipe's SGD, it classifies after one epoch."""
        return self.recipe(optimizer="adam", lr=DEFAULT_LR["adam"], epochs=self.short_epochs)


class CorrectRuns:
    """The correct runs the mistakes are set against: the backend's own model and training from
    ctx.initial in the common batch order, each trained at most once and only when a measurement
    asks for it. The full recipe's run is the comparison's own when it finished (ctx.correct_history
    and ctx.trained), so `compare.py --pitfalls` does not train it again.

    Every backend's measurements share this one cache (common.pitfalls.measure makes it), so a run
    two mistakes are set against, such as the short modern run of the loss and dropout mistakes,
    is trained once.
    """

    def __init__(self, backend, ctx: PitfallContext):
        self.backend, self.ctx = backend, ctx
        self._finished: dict[TrainConfig, tuple[list[dict], object]] = {}

    def start(self, config: TrainConfig, weights: Weights | None = None):
        """A fresh model of config's variant on config's device, holding ctx.initial (or weights)."""
        model = self.backend.build(config.variant, config.device)
        self.backend.set_weights(model, self.ctx.initial if weights is None else weights)
        return model

    def _run(self, config: TrainConfig) -> tuple[list[dict], object]:
        if config not in self._finished:
            model = self.start(config)
            self._finished[config] = self.backend.train(model, self.ctx.data, config), model
        return self._finished[config]

    def history(self, config: TrainConfig) -> list[dict]:
        """The correct run's per-epoch history under config."""
        if config == self.ctx.config and self.ctx.correct_history is not None:
            return self.ctx.correct_history
        return self._run(config)[0]

    def trained_model(self, config: TrainConfig):
        """The correct run's model after training under config (shared: read it, do not change it)."""
        return self._run(config)[1]

    @property
    def full_history(self) -> list[dict]:
        """The recipe's run (ctx.config): the comparison's, or trained here."""
        return self.history(self.ctx.config)

    def epoch(self, epochs: int) -> dict:
        """The recipe's history entry after `epochs` epochs. A shorter run is a prefix of a longer one
        (an epoch's batches depend only on the seed and the epoch's number), so a known run answers
        when it is long enough."""
        known = self.ctx.correct_history if self.ctx.correct_history is not None else self._finished.get(self.ctx.config, ([],))[0]
        if len(known) >= epochs:
            return known[epochs - 1]
        return self.history(self.ctx.recipe(epochs=epochs))[-1]

    def trained(self) -> tuple[Weights, str]:
        """Trained weights to score the weight-loading mistakes with, and where they come from: the
        comparison's, else the recipe's run when it is trained here anyway, else the short Adam run
        the batch-order mistake trains (the recipe's SGD barely moves in its first epochs)."""
        if self.ctx.trained is not None:
            return self.ctx.trained, "the comparison's run"
        config = self.ctx.config if self.ctx.correct_history is None else self.ctx.adam_recipe()
        source = f"{epochs_text(config.epochs)} of the recipe" if config == self.ctx.config else f"Adam, {epochs_text(config.epochs)}"
        return self.backend.get_weights(self.trained_model(config)), source

    def mistaken_run(self, config: TrainConfig, trainer_class: type | None = None, model=None) -> tuple[float | str, list[float]]:
        """A mistaken run in the common loop: a trainer_class (the backend's Trainer with one hook
        replaced) from ctx.initial, or the backend's own Trainer from a mistaken model. Returns its
        final test accuracy, or "diverged: ...", and its test accuracy after each epoch."""
        model = self.start(config) if model is None else model
        trainer = (trainer_class or self.backend.Trainer)(model, self.ctx.data, config)
        return final_accuracy_and_curve(trainer, lambda x, y: self.backend.evaluate(model, x, y), self.ctx.data, config)


RECORD_KEYS = ("difference", "mistake", "framework", "metric", "correct", "mistaken", "test")
# Optional: "curves", series (name -> one number per epoch, or per step) that show the cost better than
# two numbers do, e.g. {"correct": [...], "mistaken": [...]}, "curve_label", what they measure, and
# "curve_x", what one point is ("epoch" or "step").
# The report draws them beside the numbers; summary.json keeps them.
CURVE_KEYS = ("curves", "curve_label", "curve_x")


def record(
    difference: differences.Difference | str, mistake: str, framework: str, metric: str, correct, mistaken, test: str,
    curves: dict[str, list[float]] | None = None, curve_label: str = "", curve_x: str = "epoch",
) -> dict:
    """One measured mistake: the mistake as one line of code, and its measured effect beside the
    correct run's number. correct and mistaken are numbers, or text (an error raised).

    difference is a registry entry (common/differences.py) or its title; a title the registry does
    not know raises KeyError, so every record lands under a difference the report can teach.
    """
    row = dict(zip(RECORD_KEYS, (differences.entry(difference).title, mistake, framework, metric, correct, mistaken, test)))
    if curves:
        row.update(curves={name: [float(v) for v in values] for name, values in curves.items()}, curve_label=curve_label, curve_x=curve_x)
    return row


def summary_record(row: dict) -> dict:
    """What summary.json keeps of a record: its seven keys and its curves; other extras served the measuring."""
    return {key: row[key] for key in (*RECORD_KEYS, *CURVE_KEYS) if key in row}


def speed_records(speed: dict) -> list[dict]:
    """What each framework's defaults cost in training images/s (summary["speed"]["defaults"], which
    `tox -e bench` measured on this CPU), as records under the registry's CPU defaults entry."""
    handled = differences.CPU_DEFAULTS.handled
    return [
        record(
            differences.CPU_DEFAULTS, row["setting"], framework, f"training images/s ({differences.CPU_DEFAULTS.measured_by})",
            round(row["tuned_images_per_second"]), round(row["default_images_per_second"]), handled[framework].tests[0],
        )
        for framework, rows in (speed.get("defaults") or {}).items()
        if framework in handled
        for row in rows
        if row.get("default_images_per_second") and row.get("tuned_images_per_second")
    ]


def guarded_by(framework: str, test_name: str) -> str:
    """The id of the test that guards a framework's handling of a difference."""
    return f"tests/test_pitfalls_{framework}.py::{test_name}"


def error_line(error: BaseException | str) -> str:
    """A framework's error as a user first sees it: the first non-blank line of its message, shortened."""
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), name)
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


def epochs_text(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''}"


def max_abs_error_vs_oracle(logits: np.ndarray, weights: Weights, x: np.ndarray, variant: str = "classic") -> float:
    """Largest difference between a framework's logits and the float64 oracle's for the same weights."""
    return float(np.max(np.abs(np.asarray(logits, np.float64) - reference.forward(weights, x, variant))))


def weight_loading_records(ctx: PitfallContext, runs: CorrectRuns, difference, mistake: str, load_wrongly: Callable, test: str) -> list[dict]:
    """A weight-loading mistake, load_wrongly(model, weights), against the backend's set_weights,
    measured twice: the forward pass from ctx.initial against the float64 oracle, and the test
    accuracy of trained weights (runs.trained())."""
    backend, variant = runs.backend, ctx.config.variant
    model = runs.start(ctx.config)
    trained, trained_from = runs.trained()
    errors, accuracies = [], []
    for load in (backend.set_weights, load_wrongly):
        load(model, ctx.initial)
        errors.append(max_abs_error_vs_oracle(backend.forward(model, ctx.probe_x), ctx.initial, ctx.probe_x, variant))
        load(model, trained)
        accuracies.append(float(backend.evaluate(model, ctx.test_x, ctx.data.test_labels)[1]))
    return [
        record(difference, mistake, backend.name, "forward max abs error vs oracle (initial weights, probe batch)", *errors, test),
        record(difference, mistake, backend.name, f"test accuracy of the trained weights ({trained_from})", *accuracies, test),
    ]


def final_accuracy_and_curve(trainer, evaluate, data: FashionMNIST, config: TrainConfig) -> tuple[float | str, list[float]]:
    """Train with the common loop: the final test accuracy, or "diverged: ..." when the loss leaves
    the rails (a mistake's effect is then the divergence itself), and the test accuracy after each
    epoch that finished, a record's curve (record(..., curves={"correct": ..., "mistaken": ...}))."""
    curve: list[float] = []
    try:
        history = fit(trainer, evaluate, data, config, on_epoch=lambda epoch: curve.append(epoch["test_accuracy"]))
        return history[-1]["test_accuracy"], curve
    except TrainingDiverged as err:
        return f"diverged: {err}", curve


def accuracy_curves(correct_history: list[dict] | None, mistaken_curve: list[float]) -> dict:
    """record()'s curve arguments for a run-length mistake (the initializer): the test accuracy after
    each epoch of the correct run, when its history is known, and of the mistaken run."""
    curves = {"correct": [entry["test_accuracy"] for entry in correct_history]} if correct_history else {}
    return dict(curves={**curves, "mistaken": mistaken_curve}, curve_label="test accuracy after each epoch")


STEP_CURVE_STEPS = 60  # enough for a loss 128 times too steep to leave the rails on the modern variant


def step_loss_curves(correct_trainer, mistaken_trainer, data: FashionMNIST, config: TrainConfig, steps: int = STEP_CURVE_STEPS) -> dict:
    """record()'s curve arguments for a mistake that shows within steps (the summed loss): the training
    loss of each of the first steps, correct and mistaken, from the same start. A series ends where
    its loss stops being finite: that is where the run diverged."""
    curves = {}
    for name, trainer in (("correct", correct_trainer), ("mistaken", mistaken_trainer)):
        losses = step_losses(trainer, data, config, steps)
        curves[name] = losses[: next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), len(losses))]
    return dict(curves=curves, curve_label="training loss per step", curve_x="step")


def batch_order_record(ctx: PitfallContext, runs: CorrectRuns, own_order_trainer: type, mistake: str, test: str) -> dict:
    """The differences.BATCH_ORDER row of one framework: the short Adam run (ctx.adam_recipe()) in the
    common batch order against the same run on the framework's own shuffling (own_order_trainer, the
    backend's Trainer stepping on the batches its framework's loader draws), and the common order of
    the next seed, which shows how far any other order moves a run.

    Shuffling is not wrong: the cost is that runs in two frameworks stop being comparable step by
    step, and their results then differ as much as two seeds' do (batch_order_spread sets every
    framework's curves side by side).
    """
    config = ctx.adam_recipe()
    common = runs.history(config)
    model = runs.start(config)
    own = fit(own_order_trainer(model, ctx.data, config), lambda x, y: runs.backend.evaluate(model, x, y), ctx.data, config)
    other_seed = runs.history(replace(config, seed=(config.seed + 1) % (MAX_SEED + 1)))
    row = record(
        differences.BATCH_ORDER, mistake, runs.backend.name, f"final test accuracy (Adam, {epochs_text(config.epochs)})",
        common[-1]["test_accuracy"], own[-1]["test_accuracy"], test,
    )
    row["curves"] = {name: [epoch["train_loss"] for epoch in history] for name, history in (("common", common), ("own", own), ("other_seed", other_seed))}
    row["other_seed_accuracy"] = other_seed[-1]["test_accuracy"]
    return row


def largest_gap(losses, reference_losses) -> float:
    """The largest absolute difference between two loss curves of the same length (step by step)."""
    return float(np.max(np.abs(np.subtract(losses, reference_losses))))


def spread(values) -> float:
    values = [float(v) for v in values]
    return max(values) - min(values)


def batch_order_spread(records: list[dict]) -> dict | None:
    """The cross-framework row for differences.BATCH_ORDER, from every framework's short runs.

    Each framework trained with the common batch order, with its own shuffling, and with the
    common order of the next seed. With the common order the frameworks agree to float32 noise;
    with their own shuffling they differ by as much as two seeds of one framework do.
    """
    title = differences.BATCH_ORDER.title
    curves = {r["framework"]: r["curves"] for r in records if r["difference"] == title and r.get("curves")}
    if len(curves) < 2:
        return None
    epochs = min(len(c[kind]) for c in curves.values() for kind in ("common", "own", "other_seed"))

    def largest_spread(kind: str) -> float:
        return max(spread(c[kind][epoch] for c in curves.values()) for epoch in range(epochs))

    seed_to_seed = max(abs(c["common"][e] - c["other_seed"][e]) for c in curves.values() for e in range(epochs))
    return record(
        title, "every framework shuffles with its own generator (DataLoader, tf.data, jax.random, Gluon)",
        ", ".join(curves), f"largest per-epoch training-loss spread across frameworks (two seeds of one framework: {seed_to_seed:.3g})",
        largest_spread("common"), largest_spread("own"), "tests/test_training_loop.py::test_fit_follows_the_batch_order_and_records_every_key",
    )


def reduction_gaps(
    backend, train_data_parallel: Callable[[ReplicaJob], dict], engine: str, mistaken_trainer: type,
    initial: Weights, config: TrainConfig, data_dir: str | None, steps: int,
) -> tuple[float, float]:
    """The largest step-loss gap to the 1-replica run of two real REDUCTION_REPLICAS-replica runs of
    the framework's engine on unequal shards: with the engine's DataParallelTrainer, then with
    mistaken_trainer, its subclass that reduces as the mean of the shards' means (injected into the
    replicas through ReplicaJob.trainer). The engine reports the global batch's mean loss either
    way, so the gap is the updates' alone."""
    data = load_fashion_mnist(data_dir, train_subset=REDUCTION_TRAIN_SUBSET, test_subset=REDUCTION_TEST_SUBSET)
    model = backend.build(config.variant, config.device)
    backend.set_weights(model, initial)
    one_replica = step_losses(backend.make_trainer(model, data, config), data, config, steps)
    folder = Path(tempfile.mkdtemp(prefix=f"lenet-pitfalls-{backend.name}-replicas-"))
    try:
        initial_path = str(save_weights(initial, folder / "initial.npz"))
        gaps = []
        for trainer in ("", f"{mistaken_trainer.__module__}:{mistaken_trainer.__qualname__}"):
            job = ReplicaJob(
                framework=backend.name, engine=engine, replicas=REDUCTION_REPLICAS, config=config, initial_weights=initial_path,
                out=str(folder / ("mean-of-shard-means" if trainer else "global-mean")), steps=steps, data_dir=data_dir,
                train_subset=REDUCTION_TRAIN_SUBSET, test_subset=REDUCTION_TEST_SUBSET, trainer=trainer,
            )
            gaps.append(largest_gap(train_data_parallel(job)["step_losses"], one_replica))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return gaps[0], gaps[1]


def data_parallel_reduction(ctx: PitfallContext, backend, mistakes, train_data_parallel: Callable[[ReplicaJob], dict]) -> dict:
    """The differences.DATA_PARALLEL_REDUCTION row, one measurement for every framework: its engine
    (mistakes.REDUCTION_ENGINE) with its DataParallelTrainer and with mistakes.MeanOfShardMeansTrainer,
    ctx.first_steps SGD steps of the classic recipe on the CPU (no dropout, whose masks each replica
    would draw on its own), so that the reduction is the runs' only difference."""
    config = ctx.recipe(variant="classic", epochs=1, device="cpu")
    engine = mistakes.REDUCTION_ENGINE
    correct, mistaken = reduction_gaps(
        backend, train_data_parallel, engine, mistakes.MeanOfShardMeansTrainer, ctx.initial, config, ctx.data.source or None, ctx.first_steps
    )
    return record(
        differences.DATA_PARALLEL_REDUCTION, mistakes.NAIVE_REDUCTION, backend.name,
        f"max step-loss gap vs 1 replica ({REDUCTION_REPLICAS} replicas, {engine} engine, unequal shards; "
        f"{ctx.first_steps} steps on {REDUCTION_TRAIN_SUBSET} images)",
        correct, mistaken, REDUCTION_TEST,
    )


def measurement_name(difference: differences.Difference) -> str:
    """The function of frameworks/<name>/pitfalls.py that measures a difference: measure_<key>."""
    return f"measure_{difference.key}"


def measurements(mistakes) -> list[tuple[differences.Difference, Callable]]:
    """A pitfalls module's measure_<key>(ctx, runs) functions, in the registry's order."""
    known = {measurement_name(difference) for difference in differences.DIFFERENCES}
    unknown = sorted(name for name in vars(mistakes) if name.startswith("measure_") and name not in known)
    if unknown:
        raise TypeError(f"{mistakes.__name__} defines {unknown}: measure_<key> must name a difference of common/differences.py")
    return [
        (difference, getattr(mistakes, measurement_name(difference)))
        for difference in differences.DIFFERENCES
        if hasattr(mistakes, measurement_name(difference))
    ]


def measure(ctx: PitfallContext, backend, mistakes, train_data_parallel: Callable[[ReplicaJob], dict] | None) -> list[dict]:
    """Every mistake a framework's pitfalls.py (`mistakes`) makes, measured in the registry's order
    against the correct runs of one CorrectRuns, then the data-parallel reduction through the
    framework's launcher (train_data_parallel; None leaves out that measurement, which starts
    replica processes: tests/test_data_parallel.py runs it on its own). A measurement returns one
    record, or a list where a mistake has two measures."""
    runs = CorrectRuns(backend, ctx)
    records = []
    for _, measurement in measurements(mistakes):
        result = measurement(ctx, runs)
        records += result if isinstance(result, list) else [result]
    # Measured the same way in every framework, from what its pitfalls.py declares (PITFALLS_API);
    # last in the registry's order too.
    if train_data_parallel is not None:
        records.append(data_parallel_reduction(ctx, backend, mistakes, train_data_parallel))
    return records

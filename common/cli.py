"""The command line every backend shares: `python -m frameworks.<name> summary|train ...`.

It only parses options and prints; the work is done by the backend's interface functions.
"""

from __future__ import annotations

import argparse
import math
import sys
from types import ModuleType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import spec
from common.data import DataError, load_fashion_mnist
from common.files import FolderBusy, OutputError, check_output_path, write_json
from common.interface import DEFAULT_LR, DEVICES, MAX_SEED, OPTIMIZERS, DeviceUnavailable, TrainConfig
from common.training import TrainingDiverged
from common.weights import WeightsError, init_weights, load_weights, save_weights

# Every error a user's input or environment can cause: printed as one line, never a traceback.
# ImportError: frameworks.get_backend's BackendUnavailable, a framework not installed here.
USER_ERRORS = (DataError, WeightsError, OutputError, FolderBusy, TrainingDiverged, DeviceUnavailable, OSError, ImportError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def whole_number(text: str, low: int, high: float = math.inf) -> int:
    """An argparse value in low..high; ArgumentTypeError (one usage line) otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        bounds = f">= {low}" if high == math.inf else f"from {low} to {high}"
        raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def seed_number(text: str) -> int:
    # Checked here: a seed out of range otherwise fails inside a framework's generator, with a traceback.
    return whole_number(text, 0, MAX_SEED)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_training_options(parser: argparse.ArgumentParser, multiple_seeds: bool = False) -> None:
    """The options a training run takes; compare.py adds the same ones."""
    parser.add_argument("--variant", choices=spec.VARIANTS, default="classic")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=None, help=f"default: {DEFAULT_LR}")
    if multiple_seeds:
        parser.add_argument("--seed", type=seed_number, nargs="+", default=[0], help=f"one or more seeds, 0 to {MAX_SEED}")
    else:
        parser.add_argument("--seed", type=seed_number, default=0, help=f"0 to {MAX_SEED}")
    parser.add_argument("--train-subset", type=positive_int, default=None, help="train on the first N examples")
    parser.add_argument("--test-subset", type=positive_int, default=None, help="test on the first N examples")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the four Fashion-MNIST .gz files (used as given, never swapped for another)"
    )


def config_from_args(args: argparse.Namespace, seed: int, device: str) -> TrainConfig:
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    return TrainConfig(
        variant=args.variant, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=lr, seed=seed, device=device,
    )


def format_epoch(entry: dict, epochs: int) -> str:
    return (
        f"epoch {entry['epoch']:>2}/{epochs}  train loss {entry['train_loss']:.4f}  acc {entry['train_accuracy']:.4f}"
        f"  |  test loss {entry['test_loss']:.4f}  acc {entry['test_accuracy']:.4f}"
        f"  |  {entry['seconds']:.2f} s  {entry['images_per_second']:,.0f} img/s"
    )


def summary_table(backend: ModuleType, model) -> Table:
    table = Table(title=f"LeNet-5 in {backend.name} {backend.version()} ({backend.data_format})")
    native = ",".join(backend.data_format[1:])
    for column in ("layer", "kind", "output (C,H,W)", f"native ({native})", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for row in backend.layer_summary(model):
        table.add_row(row.name, row.kind, str(row.shape), str(row.native_shape), f"{row.params:,}")
    table.add_row("total", "", "", "", f"{backend.param_count(model):,}", style="bold")
    return table


def run_summary(backend: ModuleType, args, console: Console) -> None:
    console.print(summary_table(backend, backend.build(args.variant, args.device)))


def check_outputs(args) -> None:
    """Fail now, not after training, when --json or --save-weights cannot be written."""
    paths = [check_output_path(path, flag) for flag, path in (("--json", args.json), ("--save-weights", args.save_weights)) if path]
    if len(paths) == 2 and paths[0].resolve() == paths[1].resolve():
        raise OutputError(f"--json and --save-weights are both {paths[0]}. Fix: give them different paths.")


def history_record(backend: ModuleType, config: TrainConfig, history: list[dict], partial: bool) -> dict:
    return dict(framework=backend.name, version=backend.version(), config=config.to_dict(), partial=partial, history=history)


def run_training(backend: ModuleType, args, console: Console) -> list[dict]:
    config = config_from_args(args, args.seed, args.device)
    check_outputs(args)
    initial = load_weights(args.init_weights, config.variant) if args.init_weights else init_weights(config.seed, config.variant)
    model = backend.build(config.variant, config.device)
    # Every framework starts from the same canonical numbers, not from its own initializer.
    backend.set_weights(model, initial)
    data = load_fashion_mnist(args.data_dir, train_subset=args.train_subset, test_subset=args.test_subset)
    console.print(f"{backend.name} {backend.version()}: {config}")
    console.print(f"data: {len(data.train_labels):,} train / {len(data.test_labels):,} test from {data.source}")
    history = []  # filled as epochs finish, so a stopped run still has them
    try:
        with Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task("train", total=None, epoch=1)

            def on_batch(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            def on_epoch(entry: dict) -> None:
                history.append(entry)
                progress.console.print(format_epoch(entry, config.epochs))
                progress.update(task, completed=0, epoch=entry["epoch"] + 1)

            backend.train(model, data, config, on_epoch=on_epoch, on_batch=on_batch)
    except (KeyboardInterrupt, TrainingDiverged):
        if args.json:
            path = write_json(args.json, history_record(backend, config, history, partial=True))
            console.print(f"stopped after {len(history)} of {config.epochs} epochs: their history written to {path}, marked partial")
        if args.save_weights:
            console.print(f"weights not written to {args.save_weights}: the run did not finish")
        raise
    # Both outputs are attempted, so one that fails does not cost the other.
    outputs = []
    if args.json:
        outputs.append(("history", lambda: write_json(args.json, history_record(backend, config, history, partial=False))))
    if args.save_weights:
        outputs.append(("weights", lambda: save_weights(backend.get_weights(model), args.save_weights, config.variant)))
    failures = []
    for what, write in outputs:
        try:
            console.print(f"{what} written to {write()}")
        except OutputError as err:
            failures.append(str(err))
    if failures:
        raise OutputError("; ".join(failures))
    return history


def build_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m frameworks.{name}", description=f"LeNet-5 in {name}.")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print each layer's output shape and parameters")
    summary.add_argument("--variant", choices=spec.VARIANTS, default="classic")
    train = commands.add_parser("train", help="train on Fashion-MNIST")
    add_training_options(train)
    train.add_argument("--init-weights", default=None, help="start from this canonical .npz instead of the seed's")
    train.add_argument("--save-weights", default=None, help="write the trained weights (canonical .npz) here")
    train.add_argument("--json", default=None, help="write the history as JSON here (a stopped run's too, marked partial)")
    for sub in (summary, train):
        sub.add_argument("--device", choices=DEVICES, default="cpu")
    return parser


def main(backend: ModuleType | str, argv: list[str] | None = None) -> None:
    """The CLI for a backend module, or for a backend's name.

    Given the name, the framework is imported after the options are parsed and inside the error
    handling: a bad option then needs no slow framework import, and Ctrl-C or a missing framework
    during that import is one line too.
    """
    name = backend if isinstance(backend, str) else backend.name
    args = build_parser(name).parse_args(argv)
    console = Console(soft_wrap=True)  # an error or epoch line stays one line, however long
    try:
        if isinstance(backend, str):
            from frameworks import get_backend  # here: common/ imports no backend when it is imported

            backend = get_backend(backend)
        (run_summary if args.command == "summary" else run_training)(backend, args, console)
    except USER_ERRORS as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")  # escape: messages may hold [brackets]
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted:[/red] stopped by Ctrl-C")
        sys.exit(EXIT_INTERRUPTED)

"""The command line every backend shares: `python -m frameworks.<name> summary|train ...`.

It only parses options and prints; the work is done by the backend's interface functions.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import spec
from common.data import DataError, load_fashion_mnist
from common.files import write_json
from common.interface import DEFAULT_LR, DEVICES, OPTIMIZERS, DeviceUnavailable, TrainConfig
from common.training import TrainingDiverged
from common.weights import WeightsError, init_weights, load_weights, save_weights


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_training_options(parser: argparse.ArgumentParser, multiple_seeds: bool = False) -> None:
    """The options a training run takes; compare.py adds the same ones."""
    parser.add_argument("--variant", choices=spec.VARIANTS, default="classic")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=None, help=f"default: {DEFAULT_LR}")
    if multiple_seeds:
        parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more seeds")
    else:
        parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=positive_int, default=None, help="train on the first N examples")
    parser.add_argument("--test-subset", type=positive_int, default=None, help="test on the first N examples")
    parser.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST .gz files")


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


def run_training(backend: ModuleType, args, console: Console) -> list[dict]:
    config = config_from_args(args, args.seed, args.device)
    data = load_fashion_mnist(args.data_dir, train_subset=args.train_subset, test_subset=args.test_subset)
    model = backend.build(config.variant, config.device)
    # Every framework starts from the same canonical numbers, not from its own initializer.
    backend.set_weights(model, load_weights(args.init_weights) if args.init_weights else init_weights(config.seed))
    console.print(f"{backend.name} {backend.version()}: {config}")
    console.print(f"data: {len(data.train_labels):,} train / {len(data.test_labels):,} test from {data.source}")
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("train", total=None, epoch=1)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(entry: dict) -> None:
            progress.console.print(format_epoch(entry, config.epochs))
            progress.update(task, completed=0, epoch=entry["epoch"] + 1)

        history = backend.train(model, data, config, on_epoch=on_epoch, on_batch=on_batch)
    if args.json:
        record = dict(framework=backend.name, version=backend.version(), config=config.to_dict(), history=history)
        console.print(f"history written to {write_json(args.json, record)}")
    if args.save_weights:
        console.print(f"weights written to {save_weights(backend.get_weights(model), args.save_weights)}")
    return history


def build_parser(backend: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m frameworks.{backend.name}", description=f"LeNet-5 in {backend.name}.")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print each layer's output shape and parameters")
    summary.add_argument("--variant", choices=spec.VARIANTS, default="classic")
    train = commands.add_parser("train", help="train on Fashion-MNIST")
    add_training_options(train)
    train.add_argument("--init-weights", default=None, help="start from this canonical .npz instead of the seed's")
    train.add_argument("--save-weights", default=None, help="write the trained weights (canonical .npz) here")
    train.add_argument("--json", default=None, help="write the history as JSON here")
    for sub in (summary, train):
        sub.add_argument("--device", choices=DEVICES, default="cpu")
    return parser


def main(backend: ModuleType, argv: list[str] | None = None) -> None:
    args = build_parser(backend).parse_args(argv)
    console = Console()
    try:
        (run_summary if args.command == "summary" else run_training)(backend, args, console)
    except (DataError, WeightsError, TrainingDiverged, DeviceUnavailable) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")  # escape: messages may hold [brackets]
        sys.exit(1)

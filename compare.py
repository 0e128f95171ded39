"""Run LeNet-5 in every framework, each in its own process, and prove they are the same network.

    python compare.py                  # the d2l recipe: classic, SGD 0.1, batch 128, 10 epochs
    python compare.py --quick          # a short first look
    python compare.py --variant modern --optimizer adam --seed 0 1 2
    python compare.py --replicas 2 3   # also train data-parallel on 2 and 3 replicas, against 1
    python compare.py --frameworks numpy pytorch   # the float64 NumPy oracle as a column of its own
    python compare.py --pitfalls       # also measure what each mishandled difference costs

Writes summary.json, report.md, curves.png and report.html under --out; exits non-zero when a
framework fails or a parity check does not hold (130 when interrupted, with partial results kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from common.cli import USER_ERRORS, add_training_options, config_from_args, positive_int
from common.data import FILES
from common.data_parallel import replicas_problem
from common.files import check_output_dir
from common.harness import Options, run_comparison
from common.interface import DEVICE_CHOICES
from common.parity import passed
from common.runtime import cores
from frameworks import ALL_BACKENDS, BACKENDS

TRAIN_EXAMPLES = FILES["train_images"].count
QUICK = dict(epochs=2, train_subset=6000, test_subset=2000)


def python_override(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or name not in ALL_BACKENDS or not path:
        raise argparse.ArgumentTypeError(f"expected FRAMEWORK=PATH with FRAMEWORK one of {', '.join(ALL_BACKENDS)}, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such interpreter")
    return name, path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", choices=ALL_BACKENDS, default=list(BACKENDS))
    add_training_options(parser, multiple_seeds=True)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu")
    parser.add_argument("--replicas", type=positive_int, nargs="+", default=[], help="data-parallel runs on N replicas (N >= 2)")
    parser.add_argument("--pitfalls", action="store_true", help="also make each mistake a user would make and measure its cost")
    parser.add_argument("--python", type=python_override, action="append", default=[], metavar="FRAMEWORK=PATH",
                        help="run a framework with this interpreter instead of its tox env's")
    parser.add_argument("--out", type=Path, default=None, help="default: results/<timestamp>/")
    parser.add_argument("--quick", action="store_true", help=f"a short run: {QUICK}")
    parser.add_argument("--lanes", type=positive_int, default=None,
                        help="frameworks trained at once, each on its own cores (default: one per core, up to the frameworks)")
    parser.add_argument("--force", action="store_true", help="rerun frameworks that already finished in --out")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    for option, values in (("--seed", args.seed), ("--frameworks", args.frameworks), ("--replicas", args.replicas)):
        if len(set(values)) != len(values):
            parser.error(f"{option} values must differ, got {' '.join(map(str, values))}")
    if any(n < 2 for n in args.replicas):
        parser.error(f"--replicas takes numbers >= 2 (1 replica is the ordinary run), got {' '.join(map(str, args.replicas))}")
    train_examples = args.train_subset or TRAIN_EXAMPLES
    for replicas in args.replicas:
        if problem := replicas_problem(replicas, args.batch_size, train_examples, cores()):
            parser.error(problem)  # before any process starts
    args.out = args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # soft_wrap: paths in messages stay on one line
    try:
        options = Options(
            frameworks=args.frameworks, config=config_from_args(args, seed=args.seed[0], device=args.device), seeds=args.seed,
            out=check_output_dir(args.out), train_subset=args.train_subset, test_subset=args.test_subset,
            data_dir=args.data_dir, force=args.force, replicas=args.replicas, pythons=dict(args.python),
            pitfalls=args.pitfalls, lanes=args.lanes,
        )
        summary = run_comparison(options)
    except USER_ERRORS as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        console.print(f"interrupted: partial results and report in {args.out}")
        return 130
    print(f"report: {args.out / 'report.html'}")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())

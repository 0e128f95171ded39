"""Run LeNet-5 in every framework, each in its own process, and prove they are the same network.

    python compare.py                  # the d2l recipe: classic, SGD 0.1, batch 128, 10 epochs
    python compare.py --quick          # a short first look
    python compare.py --variant modern --optimizer adam --seed 0 1 2

Writes summary.json, report.md, curves.png and report.html under --out; exits non-zero when a
framework fails or a parity check does not hold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common.cli import add_training_options, config_from_args
from common.data import DataError
from common.harness import Options, run_comparison
from common.parity import passed
from frameworks import BACKENDS

QUICK = dict(epochs=2, train_subset=6000, test_subset=2000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    add_training_options(parser, multiple_seeds=True)
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="default: results/<timestamp>/")
    parser.add_argument("--quick", action="store_true", help=f"a short run: {QUICK}")
    parser.add_argument("--force", action="store_true", help="rerun frameworks that already finished in --out")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if len(set(args.seed)) != len(args.seed):
        parser.error(f"--seed values must differ, got {args.seed}")
    args.out = args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args, seed=args.seed[0], device="cpu").to_dict()
    config["device"] = args.device
    options = Options(
        frameworks=args.frameworks, config=config, seeds=args.seed, out=args.out, train_subset=args.train_subset,
        test_subset=args.test_subset, data_dir=args.data_dir, force=args.force,
    )
    try:
        summary = run_comparison(options)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {args.out / 'report.html'}")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Stored reference curves: the canonical run's numbers per framework, with the versions that made them.

A pin bumped next year can change a framework's curve silently; the parity checks would not see
it when every framework moved together, and nothing else remembers last year's numbers. So the
canonical run (the d2l recipe: classic, SGD lr 0.1, batch 128, 10 epochs, seed 0, all the data)
is kept in tests/golden/<framework>.json: the first step losses, the per-epoch losses and test
accuracies, and the versions. A record may hold only the run's first epochs (`compare.py --epochs N`,
N < 10, everything else default): those are the canonical run's first N epochs exactly. tests/test_golden.py reruns a short piece of that run in each
framework's env and fails when the numbers drift beyond the parity tolerances.

Refresh the record from a passing canonical comparison, never by hand:

    python compare.py --out /tmp/golden_run && python -m common.golden /tmp/golden_run/summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.files import OutputError, write_json
from common.interface import TrainConfig
from common.parity import ACCURACY_SPREAD_TOL, EPOCH_LOSS_TOL, STEP_LOSS_TOL, passed

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
CANONICAL = TrainConfig()  # the d2l recipe, seed 0
STEPS = 50  # first step losses recorded (the harness's default)


class GoldenError(ValueError):
    """A summary that cannot become the record, or a record that cannot be read; the message says why and what to do."""


def canonical_problems(summary: dict) -> list[str]:
    """Why a comparison's summary is not the canonical run (empty when it is)."""
    config = summary.get("config", {})
    problems = [
        f"{key} is {config.get(key)!r}, not {value!r}"
        for key, value in {**CANONICAL.to_dict(), "seeds": [CANONICAL.seed], "train_subset": None, "test_subset": None}.items()
        if key not in ("device", "epochs") and config.get(key) != value
    ]
    # Fewer epochs are the canonical run's first epochs (the batch order of an epoch does not depend on how many follow).
    if not (isinstance(config.get("epochs"), int) and 1 <= config["epochs"] <= CANONICAL.epochs):
        problems.append(f"epochs is {config.get('epochs')!r}, not 1 to {CANONICAL.epochs}")
    if summary.get("partial"):
        problems.append("the run was interrupted (partial)")
    elif not passed(summary):
        problems.append("the comparison did not pass its parity checks")
    return problems


def record(summary: dict, name: str) -> dict:
    """One framework's golden record from a canonical comparison's summary."""
    entry = summary["frameworks"][name]
    history = entry["history"]
    return dict(
        framework=name,
        version=entry["version"],
        python=summary["environment"]["python"],
        device=entry.get("device"),
        recipe={key: value for key, value in summary["config"].items() if key != "device"},
        step_losses=entry["step_losses"][:STEPS],
        epoch_losses=[e["train_loss"] for e in history],
        epoch_test_accuracies=[e["test_accuracy"] for e in history],
        epochs=len(history),
        final_test_accuracy=entry["final_test_accuracy"],  # after `epochs` epochs
        tolerances=dict(step_loss=STEP_LOSS_TOL, epoch_loss=EPOCH_LOSS_TOL, accuracy=ACCURACY_SPREAD_TOL),
    )


def write_records(summary_path: str | Path, folder: str | Path = GOLDEN_DIR) -> list[Path]:
    """tests/golden/<framework>.json for every framework of a passing canonical comparison, each written atomically."""
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError) as err:
        raise GoldenError(f"cannot read {summary_path}: {err}. Give the summary.json of a finished comparison.") from err
    problems = canonical_problems(summary)
    if problems:
        raise GoldenError(
            f"{summary_path} is not a passing canonical run: {'; '.join(problems)}. "
            "Run `python compare.py --out DIR` with the defaults, then give DIR/summary.json."
        )
    names = [name for name in summary["frameworks"] if name != "numpy"]  # the oracle has no version to drift
    records = {name: record(summary, name) for name in names}  # every record is built before any is written
    return [write_json(Path(folder) / f"{name}.json", rec) for name, rec in records.items()]


def load_record(name: str, folder: str | Path = GOLDEN_DIR) -> dict:
    path = Path(folder) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GoldenError(f"no readable golden record for {name} at {path}: {err}. Refresh it: see common/golden.py.") from err


def _largest_gap(got: list[float], recorded: list[float]) -> tuple[float, int]:
    gaps = [abs(a - b) for a, b in zip(got, recorded)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    return gaps[worst], worst + 1


def drift(rec: dict, installed_version: str, step_losses=None, epoch_losses=None, epoch_test_accuracies=None) -> list[str]:
    """What moved beyond the parity tolerances against the record, each line naming the versions; empty when nothing did.

    Give what the short rerun measured: the first step losses and/or the first epochs' losses and test accuracies.
    """
    said = f"{rec['framework']} {installed_version} (record made with {rec['version']})"
    problems = []
    for what, got, recorded, tolerance in (
        ("step loss", step_losses, rec["step_losses"], STEP_LOSS_TOL),
        ("epoch training loss", epoch_losses, rec["epoch_losses"], EPOCH_LOSS_TOL),
        ("epoch test accuracy", epoch_test_accuracies, rec["epoch_test_accuracies"], ACCURACY_SPREAD_TOL),
    ):
        if got is None:
            continue
        if len(got) > len(recorded):
            problems.append(f"{said}: {len(got)} values of {what} measured, the record holds {len(recorded)}")
            continue
        gap, at = _largest_gap(got, recorded)
        if gap > tolerance:
            problems.append(f"{said}: {what} {at} drifted by {gap:.3g} > {tolerance:g} ({got[at - 1]:.6f} now, {recorded[at - 1]:.6f} recorded)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write tests/golden/*.json from a passing canonical comparison's summary.json.")
    parser.add_argument("summary", type=Path, help="summary.json of `python compare.py --out DIR` run with the defaults")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help=f"where the records go (default {GOLDEN_DIR})")
    args = parser.parse_args(argv)
    try:
        for path in write_records(args.summary, args.dir):
            print(f"wrote {path}")
    except (GoldenError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

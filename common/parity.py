"""The parity checks: what the workers measured, judged against the spec, the oracle and each other.

Every check records its measured value and its tolerance, passing or not, so the report shows
how close the frameworks are, not only whether they are close enough.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from common import reference, spec
from common.interface import LayerRow, param_mismatches, shape_mismatches

PROBE_SIZE = 64  # the fixed batch for forward and gradient checks (and the pitfalls'): the first test images

FORWARD_TOL = 1e-5  # max abs logits difference against the oracle
GRAD_TOL = 1e-4  # relative: max abs difference / max abs oracle value, worst tensor
STEP_LOSS_TOL = 1e-4  # per-step loss spread over the first steps
EPOCH_LOSS_TOL = 1e-3  # per-epoch training loss spread
ACCURACY_SPREAD_TOL = 0.002  # final test accuracy spread: 0.2 percentage points
CROSS_EVAL_TOL = 0.0001  # same weights, different framework: 0.01 percentage points
REPLICA_WEIGHT_TOL = 1e-6  # max abs difference between the replicas' final weights


def check(name: str, frameworks: Iterable[str], value: float, tolerance: float, detail: str = "") -> dict:
    value = float(value)
    return dict(check=name, frameworks=list(frameworks), value=value, tolerance=tolerance, ok=bool(value <= tolerance), detail=detail)


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-12))


def spread(values: Iterable[float]) -> float:
    values = list(values)
    return max(values) - min(values)


def structure_checks(name: str, result: dict, variant: str) -> list[dict]:
    """Checks 1-2: measured layer shapes and parameter counts against the spec."""
    rows = [LayerRow(**{**row, "shape": tuple(row["shape"])}) for row in result["layers"]]
    shape_errors = shape_mismatches(rows, variant)
    param_errors = param_mismatches(rows, variant)
    total = spec.param_count(variant)
    if result["params"] != total:
        param_errors.append(f"total {result['params']:,} != {total:,}")
    return [
        check("layer shapes equal the spec", [name], len(shape_errors), 0, "; ".join(shape_errors) or "all layers match"),
        check(
            "parameters per layer and in total equal the spec", [name], len(param_errors), 0,
            "; ".join(param_errors) or f"{result['params']:,} in total",
        ),
    ]


def probe_checks(name: str, probe_results: dict, probe_loss: float, initial: dict, x, y, variant: str) -> list[dict]:
    """Checks 3-5: weight round trip, forward, loss and gradients against the float64 oracle."""
    roundtrip = max(float(np.max(np.abs(probe_results[f"roundtrip/{k}"] - w))) for k, w in initial.items())
    logits_diff = float(np.max(np.abs(probe_results["logits"] - reference.forward(initial, x, variant))))
    ref_loss, ref_grads = reference.loss_and_grads(initial, x, y, variant)
    grad_errors = {k: relative_error(probe_results[f"grad/{k}"], g) for k, g in ref_grads.items()}
    worst = max(grad_errors, key=grad_errors.get)
    return [
        check("canonical weights round-trip bit-exact", [name], roundtrip, 0.0, "max abs difference"),
        check("forward logits match the NumPy reference", [name], logits_diff, FORWARD_TOL, "max abs difference"),
        check("gradients match the NumPy reference", [name], grad_errors[worst], GRAD_TOL, f"relative; worst tensor {worst}"),
        check("loss matches the NumPy reference", [name], abs(probe_loss - ref_loss) / ref_loss, GRAD_TOL, "relative"),
    ]


def training_checks(results: dict[str, dict], deterministic: bool) -> list[dict]:
    """Checks 6-7 across frameworks that finished: first steps, epoch losses, final accuracy."""
    names = list(results)
    if len(names) < 2:
        return []
    checks = []
    if deterministic and all(results[n]["step_losses"] for n in names):
        steps = np.array([results[n]["step_losses"] for n in names])
        checks.append(
            check(f"first {steps.shape[1]} step losses agree", names, np.max(steps.max(0) - steps.min(0)), STEP_LOSS_TOL, "max spread over steps")
        )
    if deterministic:
        epochs = np.array([[e["train_loss"] for e in results[n]["history"]] for n in names])
        checks.append(check("per-epoch training losses agree", names, np.max(epochs.max(0) - epochs.min(0)), EPOCH_LOSS_TOL, "max spread over epochs"))
        accuracies = [results[n]["final_test_accuracy"] for n in names]
        checks.append(check("final test accuracies agree", names, spread(accuracies), ACCURACY_SPREAD_TOL, "spread, as a fraction"))
    return checks


def cross_eval_checks(matrix: dict[str, dict[str, float]]) -> list[dict]:
    """Check 8: each framework's trained weights give the same accuracy in every framework.

    matrix[evaluator][source] is the test accuracy of source's weights run by evaluator.
    """
    sources = sorted({s for row in matrix.values() for s in row})
    checks = []
    for source in sources:
        evaluators = [e for e in matrix if source in matrix[e]]
        if len(evaluators) > 1:
            value = spread(matrix[e][source] for e in evaluators)
            checks.append(check(f"{source}'s trained weights score the same everywhere", evaluators, value, CROSS_EVAL_TOL, "accuracy spread"))
    return checks


def replica_gaps(result: dict, single: dict) -> dict[str, float | None]:
    """How far an N-replica run lands from the 1-replica run: the largest step-loss and epoch-loss
    differences and the final-accuracy difference (None where either run lacks the numbers)."""
    steps = min(len(result.get("step_losses") or []), len(single.get("step_losses") or []))
    epochs = min(len(result.get("history") or []), len(single.get("history") or []))
    step_gap = np.max(np.abs(np.subtract(result["step_losses"][:steps], single["step_losses"][:steps]))) if steps else None
    epoch_gap = (
        np.max(np.abs(np.subtract([e["train_loss"] for e in result["history"][:epochs]], [e["train_loss"] for e in single["history"][:epochs]])))
        if epochs else None
    )
    accuracy_gap = abs(result["final_test_accuracy"] - single["final_test_accuracy"]) if "final_test_accuracy" in single else None
    return dict(steps=steps, step_loss=step_gap, epoch_loss=epoch_gap, final_accuracy=accuracy_gap)


def replica_checks(name: str, replicas: int, result: dict, single: dict, deterministic: bool) -> list[dict]:
    """One framework trained on N replicas against its own 1-replica run, and its replicas against each other."""
    label = f"{name}, {replicas} replicas vs 1"
    checks = [
        check(
            f"{replicas} replicas hold the same weights", [name], result["replica_max_weight_difference"], REPLICA_WEIGHT_TOL,
            "max abs difference between replicas",
        )
    ]
    if not deterministic:
        return checks
    gaps = replica_gaps(result, single)
    if gaps["step_loss"] is not None:
        checks.append(check(f"first {gaps['steps']} step losses agree, {replicas} replicas vs 1", [name], gaps["step_loss"], STEP_LOSS_TOL, label))
    checks.append(check(f"per-epoch training losses agree, {replicas} replicas vs 1", [name], gaps["epoch_loss"], EPOCH_LOSS_TOL, label))
    checks.append(check(f"final test accuracies agree, {replicas} replicas vs 1", [name], gaps["final_accuracy"], ACCURACY_SPREAD_TOL, label))
    return checks


def passed(summary: dict) -> bool:
    """A comparison's verdict: it ran to the end, every framework, data-parallel and pitfalls run finished, every check held."""
    runs = (
        list(summary["frameworks"].values())
        + [entry for by_replicas in summary.get("data_parallel", {}).values() for entry in by_replicas.values()]
        + list(summary.get("pitfall_runs", {}).values())
    )
    return not summary.get("partial") and all(r["status"] == "ok" for r in runs) and all(c["ok"] for c in summary["parity"])


def seed_statistics(accuracies: dict[str, list[float]]) -> dict[str, dict]:
    return {
        name: dict(mean=float(np.mean(values)), sd=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, n=len(values))
        for name, values in accuracies.items()
    }


def seed_overlap_check(stats: dict[str, dict]) -> list[dict]:
    """Check 9: with dropout or several seeds exact agreement is not expected; mean +- sd intervals must overlap."""
    if len(stats) < 2:
        return []
    lowest_top = min(s["mean"] + s["sd"] for s in stats.values())
    highest_bottom = max(s["mean"] - s["sd"] for s in stats.values())
    gap = max(0.0, highest_bottom - lowest_top)
    return [check("accuracy intervals (mean +- sd over seeds) overlap", list(stats), gap, 0.0, "gap between intervals")]

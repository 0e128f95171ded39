"""The stored reference curves (tests/golden/, common/golden.py): a short rerun in each framework's env
must land where the canonical run landed, within the parity tolerances, or the test names the versions.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from common import golden
from common.data import DataError, load_fashion_mnist
from common.parity import STEP_LOSS_TOL
from common.training import step_losses
from common.weights import init_weights
from frameworks import BACKENDS


def golden_record(backend) -> dict:
    if backend.name not in BACKENDS:
        pytest.skip(f"{backend.name} is the oracle: no framework version to drift")
    return golden.load_record(backend.name)


@pytest.fixture(scope="module")
def full_data():
    """All 60,000 training images: the canonical run's batch order depends on the training set's size."""
    try:
        return load_fashion_mnist(download=False)
    except DataError as err:
        pytest.skip(f"real Fashion-MNIST not available: {err}")


def canonical_model(backend):
    model = backend.build(golden.CANONICAL.variant)
    backend.set_weights(model, init_weights(golden.CANONICAL.seed, golden.CANONICAL.variant))
    return model


def test_first_step_losses_match_the_golden_record(backend, full_data):
    record = golden_record(backend)
    model = canonical_model(backend)
    losses = step_losses(backend.make_trainer(model, full_data, golden.CANONICAL), full_data, golden.CANONICAL, golden.STEPS)
    problems = golden.drift(record, backend.version(), step_losses=losses)
    assert not problems, "\n".join(problems)


@pytest.mark.slow  # one full epoch: 5-30 s per framework
def test_first_epoch_matches_the_golden_record(backend, full_data):
    record = golden_record(backend)
    history = backend.train(canonical_model(backend), full_data, replace(golden.CANONICAL, epochs=1))
    problems = golden.drift(
        record, backend.version(), epoch_losses=[e["train_loss"] for e in history], epoch_test_accuracies=[e["test_accuracy"] for e in history]
    )
    assert not problems, "\n".join(problems)


def test_every_framework_has_a_record_of_the_canonical_run():
    for name in BACKENDS:
        record = golden.load_record(name)
        assert record["recipe"]["seeds"] == [0] and 1 <= record["epochs"] == record["recipe"]["epochs"] <= golden.CANONICAL.epochs
        assert len(record["step_losses"]) == golden.STEPS and len(record["epoch_losses"]) == record["epochs"]
        assert record["version"] and record["final_test_accuracy"] == record["epoch_test_accuracies"][-1]


def test_drift_beyond_the_tolerance_is_reported_with_both_versions():
    record = golden.load_record("pytorch")
    moved = [loss + (2 * STEP_LOSS_TOL if i == 7 else 0.0) for i, loss in enumerate(record["step_losses"])]
    assert golden.drift(record, record["version"], step_losses=record["step_losses"]) == []
    (problem,) = golden.drift(record, "9.9.9", step_losses=moved)
    assert "pytorch 9.9.9" in problem and f"record made with {record['version']}" in problem and "step loss 8 " in problem


def canonical_summary(tmp_path) -> dict:
    """A passing canonical summary assembled from the stored records themselves (no numbers typed here)."""
    records = {name: golden.load_record(name) for name in BACKENDS}
    frameworks = {
        name: dict(
            status="ok", version=r["version"], device=r["device"], step_losses=r["step_losses"], final_test_accuracy=r["final_test_accuracy"],
            history=[dict(train_loss=loss, test_accuracy=acc) for loss, acc in zip(r["epoch_losses"], r["epoch_test_accuracies"])],
        )
        for name, r in records.items()
    }
    return dict(config=dict(records["pytorch"]["recipe"]), environment=dict(python=records["pytorch"]["python"]), frameworks=frameworks, parity=[dict(ok=True)])


def test_refresh_writes_every_record_from_a_passing_canonical_summary(tmp_path):
    summary = canonical_summary(tmp_path)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    written = golden.write_records(path, tmp_path / "golden")
    assert sorted(p.name for p in written) == sorted(f"{name}.json" for name in BACKENDS)
    for name in BACKENDS:
        assert golden.load_record(name, tmp_path / "golden") == golden.load_record(name)


@pytest.mark.parametrize(
    "change, reason",
    [(dict(epochs=11), "epochs is 11"), (dict(lr=0.05), "lr is 0.05"), (dict(train_subset=6000), "train_subset is 6000"),
     (dict(seeds=[1]), "seeds is \\[1\\]")],
)
def test_refresh_refuses_a_run_that_is_not_the_canonical_one(tmp_path, change, reason):
    summary = canonical_summary(tmp_path)
    summary["config"].update(change)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    with pytest.raises(golden.GoldenError, match=reason):
        golden.write_records(path, tmp_path / "golden")
    assert not (tmp_path / "golden").exists()


def test_refresh_refuses_a_failed_comparison(tmp_path):
    summary = canonical_summary(tmp_path)
    summary["parity"] = [dict(ok=False)]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    with pytest.raises(golden.GoldenError, match="did not pass"):
        golden.write_records(path, tmp_path / "golden")

"""The comparison harness itself: the numpy oracle backend against PyTorch, failures, resuming, locking.

Runs in the `parity` tox env (it needs matplotlib for the report, and the pytorch env's
interpreter for a second real framework) on small real-data subsets.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

pytest.importorskip("matplotlib", reason="the report needs matplotlib: run in the parity or compare tox env")

import compare  # noqa: E402
from common import (  # noqa: E402
    cpu,  # noqa: E402
    parity,
    protocol,
)
from common.files import FolderBusy, folder_lock  # noqa: E402
from common.harness import Display, Options, core_sets, interpreter, lanes_for, run_comparison  # noqa: E402
from common.interface import TrainConfig  # noqa: E402
from common.parity import passed  # noqa: E402
from common.report import REPO  # noqa: E402
from common.weights import load_weights  # noqa: E402

pytestmark = pytest.mark.usefixtures("fashion_mnist")  # the harness runs on real-data subsets; skips without them

SECOND = "pytorch"  # the real framework the numpy oracle is compared with


def options(out: Path, frameworks: list[str], **overrides) -> Options:
    settings = dict(
        frameworks=frameworks, config=TrainConfig(epochs=2, batch_size=64, lr=0.5), seeds=[0], out=out,
        train_subset=256, test_subset=128, steps=5,
    )
    settings.update(overrides)
    return Options(**settings)


@pytest.fixture(scope="module")
def two_frameworks():
    if interpreter(SECOND) == sys.executable and importlib.util.find_spec("torch") is None:
        pytest.skip(f"no interpreter with {SECOND}: build its env first (tox run --notest -e {SECOND})")
    return ["numpy", SECOND]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, two_frameworks):
    out = tmp_path_factory.mktemp("good")
    return out, run_comparison(options(out, two_frameworks), Console(file=io.StringIO()))


def test_the_oracle_and_a_framework_pass_every_check(good_run):
    out, summary = good_run
    assert passed(summary), [c for c in summary["parity"] if not c["ok"]]
    assert set(summary) >= {"config", "environment", "frameworks", "parity", "data_source"}
    checks = {c["check"] for c in summary["parity"]}
    assert {"layer shapes equal the spec", "forward logits match the NumPy reference", "first 5 step losses agree",
            "per-epoch training losses agree", "final test accuracies agree"} <= checks
    entry = summary["frameworks"]["numpy"]
    assert entry["status"] == "ok" and entry["params"] == 61706 and len(entry["history"]) == 2
    assert set(entry["speed"]) == {
        "train_images_per_second", "warmup_seconds", "eval_images_per_second", "peak_rss_mb", "threads", "settings", "fp32_peak",
    }
    assert entry["speed"]["threads"] == max(1, cpu.cores() // 2)  # two frameworks at once, each on half the cores
    assert set(summary["speed"]["frameworks"]) == {"numpy", SECOND} and summary["speed"]["peak"]["cores"] == cpu.cores()
    assert summary["cross_eval"][SECOND]["numpy"] == summary["cross_eval"]["numpy"]["numpy"]
    assert summary["data_source"] and not summary["partial"]
    for name in ("summary.json", "report.md", "curves.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert not list(out.rglob("*.tmp")), "a temp file was left behind"


def test_failures_are_isolated(tmp_path):
    """A framework that cannot import is marked failed; the oracle still runs; the verdict is FAIL."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this interpreter has torch; the test needs one without it")
    summary = run_comparison(options(tmp_path, ["numpy", SECOND], pythons={SECOND: sys.executable}), Console(file=io.StringIO()))
    frameworks = summary["frameworks"]
    assert frameworks["numpy"]["status"] == "ok"
    assert frameworks[SECOND]["status"] == "failed" and "BackendUnavailable" in frameworks[SECOND]["error"]
    assert not passed(summary)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# LeNet-5 parity report: FAIL") and "BackendUnavailable" in report


def test_divergence_is_reported_as_a_failure(tmp_path):
    summary = run_comparison(options(tmp_path, ["numpy"], config=TrainConfig(epochs=2, batch_size=64, lr=1e4)), Console(file=io.StringIO()))
    assert summary["frameworks"]["numpy"]["status"] == "failed"
    assert "TrainingDiverged" in summary["frameworks"]["numpy"]["error"]


def test_a_skewed_forward_fails_its_check(good_run):
    out, summary = good_run
    with np.load(out / "numpy" / "seed0" / protocol.PROBE_RESULTS) as probe_results:
        skewed = dict(probe_results)
    skewed["logits"] = skewed["logits"] + 1e-3
    probe_loss = json.loads((out / "numpy" / "seed0" / "run.json").read_text())["probe_loss"]
    with np.load(out / "probe.npz") as probe:
        checks = parity.probe_checks("skewed", skewed, probe_loss, load_weights(out / "initial_weights_seed0.npz"), probe["x"], probe["y"], "classic")
    failed = [c for c in checks if not c["ok"]]
    assert [c["check"] for c in failed] == ["forward logits match the NumPy reference"]
    assert failed[0]["value"] == pytest.approx(1e-3, rel=1e-2)
    assert not passed({**summary, "parity": summary["parity"] + checks})


def test_rerun_reuses_only_sound_results(tmp_path):
    out = tmp_path / "resumed"
    first = run_comparison(options(out, ["numpy"]), Console(file=io.StringIO()))
    run_file = out / "numpy" / "seed0" / "run.json"
    before = run_file.stat().st_mtime_ns
    again = run_comparison(options(out, ["numpy"]), Console(file=io.StringIO()))
    assert run_file.stat().st_mtime_ns == before and again["reused_seconds"] >= first["frameworks"]["numpy"]["seconds"]
    # A deleted trained-weights file is noticed: the run is redone instead of trusted.
    (out / "numpy" / "seed0" / protocol.TRAINED_WEIGHTS).unlink()
    run_comparison(options(out, ["numpy"]), Console(file=io.StringIO()))
    assert run_file.stat().st_mtime_ns != before and (out / "numpy" / "seed0" / protocol.TRAINED_WEIGHTS).exists()
    # So is a damaged result file.
    before = run_file.stat().st_mtime_ns
    run_file.write_text("{not json")
    assert passed(run_comparison(options(out, ["numpy"]), Console(file=io.StringIO()))) is True
    assert json.loads(run_file.read_text())["status"] == "ok"
    run_comparison(options(out, ["numpy"], force=True), Console(file=io.StringIO()))
    assert run_file.stat().st_mtime_ns != before


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(FolderBusy):
            run_comparison(options(tmp_path, ["numpy"]), Console(file=io.StringIO()))
    assert not (tmp_path / "numpy").exists()  # refused before any work


def test_several_seeds_report_mean_and_sd(tmp_path, two_frameworks):
    summary = run_comparison(options(tmp_path, two_frameworks, seeds=[0, 1], steps=0), Console(file=io.StringIO()))
    assert set(summary["seed_statistics"]["numpy"]) == {"mean", "sd", "n"}
    assert summary["seed_statistics"]["numpy"]["n"] == 2
    assert any(c["check"].startswith("accuracy intervals") for c in summary["parity"])
    assert passed(summary)


@pytest.mark.slow
def test_ctrl_c_keeps_partial_results(tmp_path):
    out = tmp_path / "stopped"
    command = [sys.executable, "compare.py", "--frameworks", "numpy", "--epochs", "30", "--train-subset", "4096",
               "--test-subset", "256", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("numpy/seed0/probe_results.npz")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the harness and its worker
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.count("interrupted") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and not passed(summary)
    assert (out / "report.html").exists()


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--variant", "vintage"], ["--frameworks", "caffe"], ["--lr", "-1"], ["--seed", "1", "1"],
    ["--frameworks", "jax", "jax"], ["--replicas", "1"], ["--replicas", "2", "2"], ["--python", "pytorch"],
])
def test_bad_options_get_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, reason", [
    (["--frameworks", "mxnet", "--replicas", "129", "--batch-size", "128"], "more replicas than a global batch has examples (128"),
    (["--replicas", "100"], "the epoch's last batch has examples (96"),  # 60,000 = 468 x 128 + 96
    (["--replicas", "3", "--train-subset", "2"], "a global batch has examples (2)"),
    (["--replicas", "2", "9"], "2 cores take at most 8"),
])
def test_replicas_this_machine_cannot_serve_are_refused_before_anything_starts(argv, reason, capsys, monkeypatch):
    monkeypatch.setattr(compare, "cores", lambda: 2)
    with pytest.raises(SystemExit) as exit_info:
        compare.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: --replicas" in error and reason in error and "use --replicas" in error


def test_frameworks_share_the_machine_in_lanes_of_their_own_cores():
    assert lanes_for(4, machine_cores=2) == 2 and lanes_for(1, machine_cores=2) == 1 and lanes_for(4, machine_cores=16) == 4
    sets = core_sets(2)
    assert len(sets) == 2 and all(sets)
    if len(os.sched_getaffinity(0)) >= 2:
        assert not sets[0] & sets[1]


def test_display_keeps_the_reused_status_and_stops_clocks():
    display = Display(Console(file=io.StringIO()))
    task, _ = display.handler("alpha seed 0")
    display.finish(task, dict(status="ok"), reused=True)
    assert display.progress.tasks[0].fields["status"] == "done earlier, reused"
    assert display.progress.tasks[0].stop_time is not None  # a row without a total would count on to the end


def test_defaults_are_the_d2l_recipe():
    args = compare.parse_args([])
    assert (args.variant, args.optimizer, args.lr, args.batch_size, args.epochs, args.train_subset) == ("classic", "sgd", None, 128, 10, None)
    assert args.frameworks == ["pytorch", "tensorflow", "jax", "mxnet"] and args.replicas == []
    quick = compare.parse_args(["--quick", "--epochs", "3"])
    assert quick.epochs == 3 and quick.train_subset == compare.QUICK["train_subset"]


def test_the_declared_pitfalls_frameworks_are_those_with_a_pitfalls_module():
    """The harness, framework-free, knows from FRAMEWORKS_WITH_PITFALLS which workers measure
    pitfalls; each framework's env checks its module's contract (tests/test_data_parallel.py)."""
    from common.pitfalls import FRAMEWORKS_WITH_PITFALLS

    assert set(FRAMEWORKS_WITH_PITFALLS) == {path.parent.name for path in (REPO / "frameworks").glob("*/pitfalls.py")}


def test_the_declared_exporter_frameworks_are_those_with_an_export_module():
    from common.onnx_judge import FRAMEWORKS_WITH_EXPORTER

    assert set(FRAMEWORKS_WITH_EXPORTER) == {path.parent.name for path in (REPO / "frameworks").glob("*/export.py")}

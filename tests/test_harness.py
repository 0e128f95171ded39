"""The comparison harness itself, with NumPy stand-in backends and deliberately broken ones.

Runs in the `parity` tox env (it needs matplotlib for the report) on small real-data subsets.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

pytest.importorskip("matplotlib", reason="the report needs matplotlib: run in the parity or compare tox env")

import compare  # noqa: E402
from common.harness import Display, Options, run_comparison  # noqa: E402
from common.interface import TrainConfig  # noqa: E402
from common.parity import passed  # noqa: E402
from common.report import DIFFERENCES, REPO  # noqa: E402

FAKES = "tests.fake_backends."

pytestmark = pytest.mark.usefixtures("fashion_mnist")  # the harness runs on real-data subsets; skips without them


def options(out: Path, modules: dict[str, str], **overrides) -> Options:
    config = TrainConfig(epochs=2, batch_size=64, lr=0.5).to_dict()
    settings = dict(
        frameworks=list(modules), config=config, seeds=[0], out=out, train_subset=256, test_subset=128, steps=5,
        modules={name: FAKES + module for name, module in modules.items()},
    )
    settings.update(overrides)
    return Options(**settings)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    return out, run_comparison(options(out, {"alpha": "numpy_backend", "beta": "numpy_backend"}))


def test_agreeing_backends_pass_every_check(good_run):
    out, summary = good_run
    assert passed(summary)
    assert set(summary) >= {"config", "environment", "frameworks", "parity"}
    checks = {c["check"] for c in summary["parity"]}
    assert {"layer shapes equal the spec", "forward logits match the NumPy reference", "first 5 step losses agree",
            "per-epoch training losses agree", "final test accuracies agree"} <= checks
    for item in summary["parity"]:
        assert set(item) >= {"check", "frameworks", "value", "tolerance", "ok"}
    entry = summary["frameworks"]["alpha"]
    assert entry["status"] == "ok" and entry["params"] == 61706 and len(entry["history"]) == 2
    assert set(entry["history"][0]) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "images_per_second"}
    assert summary["cross_eval"]["alpha"]["beta"] == summary["cross_eval"]["beta"]["beta"]
    for name in ("summary.json", "report.md", "curves.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert not list(out.rglob("*.tmp")), "a temp file was left behind"


def test_failures_are_isolated(tmp_path):
    modules = {"good": "numpy_backend", "missing": "import_error_backend", "diverges": "diverging_backend"}
    summary = run_comparison(options(tmp_path, modules))
    frameworks = summary["frameworks"]
    assert frameworks["good"]["status"] == "ok"
    assert frameworks["missing"]["status"] == "failed" and "imaginary_framework" in frameworks["missing"]["error"]
    assert frameworks["diverges"]["status"] == "failed" and "TrainingDiverged" in frameworks["diverges"]["error"]
    assert not passed(summary)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# LeNet-5 parity report: FAIL")  # every check that ran passed; two frameworks failed
    assert "imaginary_framework" in report and "TrainingDiverged" in report
    assert json.loads((tmp_path / "summary.json").read_text())["frameworks"]["missing"]["status"] == "failed"


def test_a_failed_check_fails_the_run(tmp_path):
    summary = run_comparison(options(tmp_path, {"good": "numpy_backend", "skewed": "skewed_backend"}))
    failed = [c for c in summary["parity"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["forward logits match the NumPy reference"]
    assert failed[0]["frameworks"] == ["skewed"] and failed[0]["value"] == pytest.approx(1e-3, rel=1e-3)
    assert not passed(summary)


def test_rerun_reuses_finished_frameworks_unless_forced(good_run):
    out, _ = good_run
    run_file = out / "alpha" / "seed0" / "run.json"
    before = run_file.stat().st_mtime_ns
    run_comparison(options(out, {"alpha": "numpy_backend", "beta": "numpy_backend"}))
    assert run_file.stat().st_mtime_ns == before
    run_comparison(options(out, {"alpha": "numpy_backend", "beta": "numpy_backend"}, force=True))
    assert run_file.stat().st_mtime_ns != before


def test_several_seeds_report_mean_and_sd(tmp_path):
    summary = run_comparison(options(tmp_path, {"alpha": "numpy_backend", "beta": "numpy_backend"}, seeds=[0, 1], steps=0))
    assert set(summary["seed_statistics"]["alpha"]) == {"mean", "sd", "n"}
    assert summary["seed_statistics"]["alpha"]["n"] == 2
    assert any(c["check"].startswith("accuracy intervals") for c in summary["parity"])
    assert passed(summary)


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--variant", "vintage"], ["--frameworks", "caffe"], ["--lr", "-1"], ["--seed", "1", "1"]])
def test_bad_options_get_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_finished_run_stops_its_clock():
    """A cross-evaluation row has no total; without stopping, its elapsed time ran on to the end."""
    display = Display(Console(file=io.StringIO()))
    task, _ = display.handler("alpha cross-eval")
    display.finish(task, dict(status="ok"))
    assert display.progress.tasks[0].stop_time is not None


def test_defaults_are_the_d2l_recipe():
    args = compare.parse_args([])
    assert (args.variant, args.optimizer, args.lr, args.batch_size, args.epochs, args.train_subset) == ("classic", "sgd", None, 128, 10, None)
    assert args.frameworks == ["pytorch", "tensorflow", "jax", "mxnet"]
    quick = compare.parse_args(["--quick", "--epochs", "3"])
    assert quick.epochs == 3 and quick.train_subset == compare.QUICK["train_subset"]


def test_every_difference_points_at_real_code():
    for title, _, where in DIFFERENCES:
        for location in where.values():
            path, _, symbol = location.partition("::")
            source = (REPO / path).read_text()
            for name in re.findall(r"^[\w.]+(?:, \w+)*", symbol.strip())[0].split(", "):
                defined = name.split(".")[-1]
                assert re.search(rf"^\s*(def |class )?{defined}\b", source, re.M), f"{title}: {location} not found"


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_real_browser(good_run, tmp_path):
    out, summary = good_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    page = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") == len(re.findall(r"^## ", (out / "report.md").read_text(), re.M))
    assert 'id="curves"' in dom and "data:image/png;base64," in dom
    assert "Parity checks" in dom and "61,706" in dom and "The four model definitions" in dom
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2400", page], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one

"""Bad input to `python -m frameworks.<name> train` gives one clear line before any work starts.

Driven through the numpy backend, which needs no framework and starts in a moment.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import compare
import frameworks
from common import data
from common.cli import main
from common.interface import MAX_SEED
from common.weights import init_weights

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
QUICK = ("--train-subset", "256", "--test-subset", "128", "--epochs", "1")
needs_real_data = pytest.mark.skipif(
    not all((REAL_DATA / idx.filename).is_file() for idx in data.FILES.values()), reason=f"no Fashion-MNIST in {REAL_DATA}"
)


def cli_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "FASHION_MNIST_DIR"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def train(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frameworks.numpy", "train", *QUICK, *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env or cli_env(),
    )


def one_error(result, code: int = 1) -> str:
    """The single error line of a run that failed before training, with no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert not any(line.startswith("epoch") for line in result.stdout.splitlines())
    return errors[0]


# A folder that does not exist: an error about anything else proves that check ran before the data was looked at.
def absent_data(tmp_path) -> tuple[str, str]:
    return "--data-dir", str(tmp_path / "no-data-here")


OUTPUT_CASES = {
    "json is a folder": (lambda tmp: ("--json", f"{tmp}"), "--json {tmp} is a folder"),
    "weights is a folder": (lambda tmp: ("--save-weights", f"{tmp}"), "--save-weights {tmp} is a folder"),
    "json below a file": (
        lambda tmp: ("--json", f"{tmp}/blocker/h.json"), "--json {tmp}/blocker/h.json: {tmp}/blocker is a file, not a folder"
    ),
    "weights below a file": (lambda tmp: ("--save-weights", f"{tmp}/blocker/sub/w.npz"), "{tmp}/blocker is a file, not a folder"),
    "both in one file": (lambda tmp: ("--json", f"{tmp}/same", "--save-weights", f"{tmp}/same"), "--json and --save-weights are both"),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_output_paths_are_checked_before_data_and_training(case, tmp_path):
    (tmp_path / "blocker").write_text("")
    args, problem = OUTPUT_CASES[case]
    assert problem.format(tmp=tmp_path) in one_error(train(*args(tmp_path), *absent_data(tmp_path)))
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_main_given_a_name_imports_the_backend_after_parsing(tmp_path, capsys, monkeypatch):
    """frameworks/<name>/__main__.py may pass its name: a bad option then costs no framework import."""
    imported = []
    get_backend = frameworks.get_backend
    monkeypatch.setattr(frameworks, "get_backend", lambda name: imported.append(name) or get_backend(name))
    with pytest.raises(SystemExit) as exit_:
        main("numpy", ["train", "--seed", "-1"])
    assert exit_.value.code == 2 and imported == []
    with pytest.raises(SystemExit) as exit_:
        main("numpy", ["train", "--json", str(tmp_path), *absent_data(tmp_path)])
    assert exit_.value.code == 1 and imported == ["numpy"]
    expected = f"error: --json {tmp_path} is a folder. Fix: give the path of a file, inside that folder or elsewhere."
    assert capsys.readouterr().out.strip() == expected


@pytest.mark.parametrize("seed", ["-1", str(MAX_SEED + 1), str(10**40), "1.5", "abc"])
def test_seed_out_of_range_is_one_usage_error(seed, tmp_path, capsys):
    line = one_error(train("--seed", seed, *absent_data(tmp_path)), code=2)
    assert f"argument --seed: must be a whole number from 0 to {MAX_SEED}, got '{seed}'" in line
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args(["--seed", "0", seed])  # compare.py shares the option
    assert exit_.value.code == 2 and f"got '{seed}'" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["inf", "nan", "-inf", "0", "fast"])
def test_learning_rate_must_be_finite_and_positive(lr, tmp_path):
    assert f"argument --lr: must be a finite number > 0, got '{lr}'" in one_error(train(f"--lr={lr}", *absent_data(tmp_path)), code=2)


def write_not_weights(tmp_path, kind: str) -> Path:
    path = tmp_path / ("weights.npy" if kind == "npy" else f"{kind}.npz")
    if kind == "npy":
        np.save(path, np.zeros(3, np.float32))
    elif kind == "text":
        path.write_text("weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nan":
        np.savez(path, **{**init_weights(0), "fc2.bias": np.full(84, np.nan, np.float32)})
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, problem", [
    ("npy", "holds a single .npy array"),
    ("text", "is not an .npz weights file"),
    ("empty", "is empty"),
    ("folder", "is a folder, not a weights file"),
    ("absent", "no such weights file"),
    ("nan", "fc2.bias holds 84 NaN values"),
])
def test_files_that_are_not_weights_are_refused_before_data(kind, problem, tmp_path):
    path = write_not_weights(tmp_path, kind)
    line = one_error(train("--init-weights", str(path), *absent_data(tmp_path)))
    assert f"{path}: {problem}" in line and "allow_pickle" not in line


def test_named_data_folder_is_used_or_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_error(train("--data-dir", str(tmp_path / "empty")))
    assert f"{tmp_path / 'empty'} (from --data-dir) holds none of the four Fashion-MNIST files" in line
    line = one_error(train(env=cli_env(FASHION_MNIST_DIR=str(tmp_path / "absent"))))
    assert f"{tmp_path / 'absent'} (from FASHION_MNIST_DIR) does not exist" in line


@needs_real_data
def test_complete_run_writes_outputs_marked_complete_with_the_umask_mode(tmp_path):
    history, weights = tmp_path / "out" / "history.json", tmp_path / "out" / "weights.npz"
    result = train("--data-dir", str(REAL_DATA), "--json", str(history), "--save-weights", str(weights))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"test from {REAL_DATA}" in result.stdout
    record = json.loads(history.read_text())
    assert record["partial"] is False and len(record["history"]) == 1
    umask = os.umask(0)
    os.umask(umask)
    for path in (history, weights):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@needs_real_data
def test_diverged_run_keeps_a_partial_history(tmp_path):
    history, weights = tmp_path / "history.json", tmp_path / "weights.npz"
    result = train("--data-dir", str(REAL_DATA), "--lr", "1e4", "--json", str(history), "--save-weights", str(weights))
    assert "training loss is" in one_error(result)
    assert "marked partial" in result.stdout and not weights.exists()
    record = json.loads(history.read_text())
    assert record["partial"] is True and record["history"] == []


@needs_real_data
def test_ctrl_c_exits_130_with_one_line_and_a_partial_history(tmp_path):
    history = tmp_path / "history.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "frameworks.numpy", "train", "--data-dir", str(REAL_DATA), "--epochs", "50",
         "--train-subset", "2048", "--test-subset", "128", "--json", str(history)],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and Python keeps that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    watchdog = threading.Timer(300, run.kill)  # a hung run fails the test instead of blocking it
    watchdog.start()
    try:
        lines = []
        while not any(line.startswith("epoch") for line in lines):
            line = run.stdout.readline()
            assert line, "the run ended before its first epoch: " + "".join(lines) + run.stderr.read()
            lines.append(line)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        watchdog.cancel()
    stdout = "".join(lines) + stdout
    assert run.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert [line for line in stdout.splitlines() if "interrupted" in line] == ["interrupted: stopped by Ctrl-C"]
    record = json.loads(history.read_text())
    assert record["partial"] is True and 1 <= len(record["history"]) < 50
    assert f"stopped after {len(record['history'])} of 50 epochs" in stdout

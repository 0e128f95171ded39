"""The process settings the backends apply before loading their framework (common/runtime.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from common import runtime
from frameworks import BACKENDS

ALL_SETTINGS = {name for framework in BACKENDS for name in runtime.thread_settings(framework)}


@pytest.fixture
def clean_environment(monkeypatch):
    """No runtime variable set; whatever tune_process sets is undone afterwards."""
    for name in ALL_SETTINGS | {runtime.OPT_OUT}:
        monkeypatch.delenv(name, raising=False)


def test_settings_are_applied_and_reported(clean_environment):
    applied = runtime.tune_process("mxnet")
    assert applied == {"MXNET_ENGINE_TYPE": "NaiveEngine", "OMP_NUM_THREADS": str(runtime.cores())}
    assert all(os.environ[name] == value for name, value in applied.items())


def test_a_value_the_user_set_is_kept(clean_environment, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" not in runtime.tune_process("mxnet")
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_opting_out_sets_nothing(clean_environment, monkeypatch):
    monkeypatch.setenv(runtime.OPT_OUT, "0")
    assert runtime.tune_process("pytorch") == {}
    assert "OMP_PROC_BIND" not in os.environ


def test_a_loaded_backend_runs_with_its_settings(backend):
    if os.environ.get(runtime.OPT_OUT) == "0":
        pytest.skip(f"{runtime.OPT_OUT}=0 here")
    for name in runtime.thread_settings(backend.name):
        assert name in os.environ, f"importing frameworks.{backend.name} did not set {name}"


PAGE_FAULTS = """
import resource, sys
import numpy as np
from common.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):  # a training step keeps its activations until the backward pass, then frees them
    activations = [np.ones((128, 6, 28, 28), np.float32) for _ in range(4)]  # 2.4 MB each, conv1's output size
    del activations
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning")
def test_keeping_freed_memory_stops_the_page_faults():
    def faults(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, cwd=Path(runtime.__file__).parents[1])
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    # By default freeing them hands the pages back, so each new block faults its pages in again. How
    # many faults that costs depends on the kernel (page size, transparent huge pages), so compare the
    # two modes in the same process environment rather than against a fixed count.
    default, kept = faults("default"), faults("keep")
    assert kept * 10 < default, f"keeping freed memory: {kept} page faults, default: {default}"


def test_a_setting_can_be_left_out_on_its_own(clean_environment, monkeypatch):
    monkeypatch.setenv(runtime.SKIP, "naive-engine")
    assert runtime.tune_process("mxnet") == {}
    assert "MXNET_ENGINE_TYPE" not in os.environ

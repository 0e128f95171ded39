"""The process settings the backends apply before loading their framework (common/runtime.py)."""

from __future__ import annotations

import os

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


def test_a_setting_can_be_left_out_on_its_own(clean_environment, monkeypatch):
    monkeypatch.setenv(runtime.SKIP, "naive-engine")
    assert runtime.tune_process("mxnet") == {}
    assert "MXNET_ENGINE_TYPE" not in os.environ

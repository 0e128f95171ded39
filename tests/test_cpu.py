"""The CPU facts the runtime settings and the speed tables are computed from (common/cpu.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common import cpu, runtime


def two_cores(cpuinfo: str) -> cpu.CPU:
    """That CPU with 2 cores, whatever this test process's affinity (a loaded framework may have pinned it to one)."""
    return replace(cpu.detect(cpuinfo, ""), cores=2)


EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\ncpu MHz\t\t: 2450.000\nflags\t\t: fpu sse2 avx fma avx2\n"
XEON = "model name\t: Intel(R) Xeon(R) Platinum 8480C @ 2.00GHz\ncpu MHz\t: 800.0\nflags\t: sse2 avx avx2 fma avx512f avx512_vnni\n"


def test_flops_per_cycle_follow_the_widest_vector_extension():
    assert cpu.flops_per_cycle(frozenset({"sse2", "avx", "avx2", "fma", "avx512f"})) == 64
    assert cpu.flops_per_cycle(frozenset({"sse2", "avx", "avx2", "fma"})) == 32
    assert cpu.flops_per_cycle(frozenset({"sse2", "avx"})) == 16  # no FMA: one add and one multiply pipe
    assert cpu.flops_per_cycle(frozenset({"sse2"})) == 8
    assert cpu.flops_per_cycle(frozenset()) == 0


def test_the_clock_comes_from_sysfs_then_the_model_name_then_cpu_mhz():
    assert cpu.detect(EPYC, "3500000\n").ghz == 3.5
    xeon = cpu.detect(XEON, "")
    assert xeon.ghz == 2.0 and "model name" in xeon.clock_source  # not the idle 800 MHz
    epyc = cpu.detect(EPYC, "")
    assert epyc.ghz == 2.45 and "cpu MHz" in epyc.clock_source


def test_the_peak_is_cores_times_clock_times_flops_per_cycle():
    epyc = cpu.detect(EPYC, "")
    peak = cpu.fp32_peak(epyc, threads=2)
    assert peak["gflops"] == pytest.approx(2 * 2.45 * 32)  # 156.8 GFLOP/s
    assert peak["images_per_second"] == pytest.approx(156.8e9 / cpu.FLOP_PER_IMAGE)
    assert cpu.share_of_peak(peak["images_per_second"] / 10, peak) == pytest.approx(0.1)
    assert cpu.share_of_peak(100.0, dict(images_per_second=0.0)) is None


def test_tensorflow_gets_onednn_where_its_kernels_fit_the_cpu():
    def variables(cpuinfo: str, threads: int = 2) -> dict:
        chosen = runtime.settings("tensorflow", two_cores(cpuinfo), threads)
        return {name: value for setting in chosen for name, value in setting.variables.items()}

    assert variables(EPYC)["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert "TF_ENABLE_ONEDNN_OPTS" not in variables("model name\t: old\nflags\t: sse2\n")
    assert variables(EPYC, threads=1)["TF_NUM_INTRAOP_THREADS"] == "1"


def test_the_onednn_setting_says_whether_tensorflow_would_have_chosen_it():
    def onednn(cpuinfo: str) -> runtime.Setting:
        return next(s for s in runtime.settings("tensorflow", two_cores(cpuinfo), 2) if s.name == "onednn")

    assert "leaves oneDNN off on a CPU without VNNI" in onednn(EPYC).why  # AVX2 only: TensorFlow's default is Eigen
    assert "turns oneDNN on by itself here (this CPU has avx512_vnni)" in onednn(XEON).why
    assert onednn(EPYC).off == onednn(XEON).off == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # what the benchmark compares with


def test_one_thread_per_process_reaches_every_framework(monkeypatch):
    monkeypatch.setenv(runtime.THREADS, "1")
    machine = two_cores(EPYC)
    for framework, variable in (("pytorch", "OMP_NUM_THREADS"), ("tensorflow", "TF_NUM_INTRAOP_THREADS"), ("mxnet", "OMP_NUM_THREADS")):
        assert {name: value for s in runtime.settings(framework, machine) for name, value in s.variables.items()}[variable] == "1"
    jax_flags = {name: value for s in runtime.settings("jax", machine) for name, value in s.variables.items()}["XLA_FLAGS"]
    assert "intra_op_parallelism_threads=1" in jax_flags

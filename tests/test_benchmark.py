"""The speed benchmark runs and reports; it asserts no speed (figures belong in its output)."""

from __future__ import annotations

import pytest

from benchmarks import train_speed
from benchmarks.measure import measure
from common import cpu, runtime

PEAK = dict(images_per_second=10000.0)


def run(loop: str, images_per_second: float, peak_rss_mb: float = 500.0, framework: str = "x") -> dict:
    return dict(framework=framework, loop=loop, images_per_second=images_per_second, warmup_seconds=1.0, peak_rss_mb=peak_rss_mb)


def test_the_median_run_counts_and_the_range_is_shown():
    runs = [run("trainer", 2500.0, peak_rss_mb=600.0), run("trainer", 3000.0), run("trainer", 2000.0), dict(framework="x", loop="trainer", error="killed")]
    middle = train_speed.median_run(runs)
    assert middle["images_per_second"] == 2500.0 and middle["runs"] == [2500.0, 3000.0, 2000.0]
    assert middle["peak_rss_mb"] == 600.0  # memory: the worst run
    failed = dict(framework="y", loop="trainer", error="ImportError: no y")
    assert train_speed.median_run([failed]) == failed


def test_table_shows_the_gain_over_the_defaults_the_share_of_the_peak_and_failures():
    results = [
        train_speed.median_run([run(train_speed.TRAINER, 3000.0), run(train_speed.TRAINER, 2500.0)]),
        train_speed.median_run([run(train_speed.DEFAULTS, 1000.0)]),
        train_speed.median_run([run(train_speed.TUTORIAL, 1500.0)]),
        dict(framework="y", loop="trainer", error="ImportError: no y"),
    ]
    text = train_speed.table(results, PEAK)
    assert "| x | trainer | 2,750 | 2,500-3,000 | 1.00 | 500 | 27.5 | 2.75x | 1.83x |" in text  # one round to compare: no range
    assert "| x | trainer, defaults | 1,000 | 1,000-1,000 | 1.00 | 500 | 10.0 |  |  |" in text
    assert "failed: ImportError: no y" in text


def test_ratios_are_also_taken_round_by_round_skipping_failed_runs():
    trainer = train_speed.median_run([run(train_speed.TRAINER, 3000.0), run(train_speed.TRAINER, 2000.0), run(train_speed.TRAINER, 2400.0)])
    defaults = train_speed.median_run([run(train_speed.DEFAULTS, 2000.0), dict(framework="x", loop=train_speed.DEFAULTS, error="killed"),
                                       run(train_speed.DEFAULTS, 2400.0)])
    assert defaults["per_round"] == [2000.0, None, 2400.0]
    # Medians 2,400 over 2,200; round 1: 1.50x, round 2 has no defaults run, round 3: 1.00x.
    assert train_speed.ratio(trainer, defaults) == "1.09x (1.00-1.50)"
    assert train_speed.ratio(trainer, None) == ""


def test_each_round_starts_one_loop_further_along():
    order = ["a", "b", "c"]
    assert [train_speed.turn_order(order, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_more_images_than_the_training_set_is_refused_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr(train_speed, "run", lambda *args: pytest.fail("a measuring process was started"))
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--images", "64000"])
    assert exit_info.value.code == 2
    assert "--images: must be a whole number from 1 to 60000, got '64000'" in capsys.readouterr().err


def test_each_loop_gets_its_settings_and_each_setting_can_be_left_out():
    assert train_speed.loop_env("mxnet", train_speed.TRAINER) == {}
    defaults = train_speed.loop_env("mxnet", train_speed.DEFAULTS)
    assert defaults == train_speed.loop_env("mxnet", train_speed.TUTORIAL) == {runtime.OPT_OUT: "0"}
    names = [setting.name for setting in runtime.settings("mxnet")]
    each = train_speed.loops("mxnet", each_setting=True)
    assert [train_speed.loop_env("mxnet", loop) for loop in each[3:]] == [{runtime.SKIP: name} for name in names]


def test_a_default_that_depends_on_the_cpu_is_measured_turned_off(monkeypatch):
    # On a CPU where TensorFlow turns oneDNN on by itself, leaving the setting out would measure
    # nothing; the run without it turns oneDNN off, as TensorFlow's default is on other CPUs.
    vnni = cpu.CPU(model="x", flags=frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}), cores=2, ghz=2.0, clock_source="test")
    monkeypatch.setattr(cpu, "detect", lambda: vnni)
    assert train_speed.loop_env("tensorflow", train_speed.WITHOUT + "onednn") == {runtime.SKIP: "onednn", "TF_ENABLE_ONEDNN_OPTS": "0"}
    onednn = next(s for s in runtime.settings("tensorflow") if s.name == "onednn")
    assert train_speed.left_out(onednn).startswith("onednn: TF_ENABLE_ONEDNN_OPTS=0 instead of TF_ENABLE_ONEDNN_OPTS=1 (")


def test_the_cost_of_each_default_is_recorded_for_the_report():
    results = [run(train_speed.TRAINER, 3000.0, framework="mxnet"), run(train_speed.DEFAULTS, 1000.0, framework="mxnet"),
               run(train_speed.WITHOUT + "naive-engine", 2000.0, framework="mxnet")]
    rows = train_speed.defaults_that_cost(results)["mxnet"]
    assert [(r["default_images_per_second"], r["tuned_images_per_second"]) for r in rows] == [(1000.0, 3000.0), (2000.0, 3000.0)]
    assert "MXNET_ENGINE_TYPE=NaiveEngine" in rows[1]["setting"]


@pytest.mark.slow  # trains twice per framework: 4 to 7 s of the fast tier's minute
@pytest.mark.usefixtures("fashion_mnist")  # measures on the real data; skips without it
@pytest.mark.parametrize("loop", ["trainer", "tutorial"])
def test_measure_trains_and_times_both_loops(backend, loop):
    if backend.name == "numpy":
        pytest.skip("the numpy oracle is not benchmarked: it has no tutorial loop and is not meant to be fast")
    result = measure(backend.name, loop, train_subset=3000)
    assert result["images"] == 3000 and result["weight_change"] > 1e-4
    assert result["images_per_second"] == pytest.approx(3000 / result["epoch_seconds"])
    assert result["warmup_seconds"] > 0 and result["peak_rss_mb"] > 0

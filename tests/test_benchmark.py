"""The speed benchmark runs and reports; it asserts no speed (figures belong in its output)."""

from __future__ import annotations

import pytest

from benchmarks import train_speed
from benchmarks.measure import measure


def test_peak_is_computed_from_the_cpu():
    peak = train_speed.cpu_peak_flops()
    assert peak["cores"] >= 1 and peak["fp32_lanes"] in (4, 8, 16)
    assert peak["gflops"] == pytest.approx(peak["cores"] * peak["ghz"] * peak["fp32_lanes"] * 2 * peak["fma_units"])


def run(loop: str, images_per_second: float, peak_rss_mb: float = 500.0) -> dict:
    return dict(
        framework="x", loop=loop, images_per_second=images_per_second, epoch_seconds=60000 / images_per_second,
        warmup_seconds=1.0, peak_rss_mb=peak_rss_mb,
    )


def test_the_fastest_run_counts_and_the_slowest_is_shown():
    runs = [run("trainer", 2500.0, peak_rss_mb=600.0), run("trainer", 3000.0), dict(framework="x", loop="trainer", error="killed")]
    best = train_speed.fastest(runs)
    assert best["images_per_second"] == 3000.0 and best["runs"] == [2500.0, 3000.0]
    assert best["peak_rss_mb"] == 600.0  # memory: the worst run
    failed = dict(framework="y", loop="trainer", error="ImportError: no y")
    assert train_speed.fastest([failed]) == failed


def test_table_shows_the_ratio_and_failures():
    results = [
        train_speed.fastest([run("trainer", 3000.0), run("trainer", 2500.0)]),
        train_speed.fastest([run("tutorial", 2000.0)]),
        dict(framework="y", loop="trainer", error="ImportError: no y"),
    ]
    text = train_speed.table(results, peak_gflops=100.0)
    assert "| x | trainer | 3,000 | 2,500 | 20.00 | 1.00 | 500 | 6.8 | 1.50x |" in text
    assert "failed: ImportError: no y" in text


@pytest.mark.usefixtures("fashion_mnist")  # measures on the real data; skips without it
@pytest.mark.parametrize("loop", ["trainer", "tutorial"])
def test_measure_trains_and_times_both_loops(backend, loop):
    if backend.name == "numpy":
        pytest.skip("the numpy oracle is not benchmarked: it has no tutorial loop and is not meant to be fast")
    result = measure(backend.name, loop, train_subset=3000)
    assert result["images"] == 3000 and result["weight_change"] > 1e-4
    assert result["images_per_second"] == pytest.approx(3000 / result["epoch_seconds"])
    assert result["warmup_seconds"] > 0 and result["peak_rss_mb"] > 0

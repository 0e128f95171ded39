"""The report generator on hand-made summaries: every table, the deviation curves, and the page width in a browser."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report needs matplotlib: run in the parity or compare tox env")

from common import spec  # noqa: E402
from common.differences import DIFFERENCES, NETWORK, code  # noqa: E402
from common.differences import entry as registry_entry  # noqa: E402
from common.lesson import MEASURE_COMMAND  # noqa: E402
from common.parity import check  # noqa: E402
from common.report import DEVIATION_FLOOR, MISSING, curves_figure, html_page, markdown, plot_curves, tables  # noqa: E402

FRAMEWORKS = ("pytorch", "tensorflow", "jax", "mxnet")
EPOCH_LOSSES = [2.30777, 2.30521, 2.29371]
STEP_LOSSES = [2.31, 2.30, 2.29, 2.28, 2.27]


def framework_entry(index: int, offset: float) -> dict:
    """A finished framework: its losses are the shared curve moved by offset."""
    return dict(
        status="ok", version=f"{index + 1}.0", device="cpu", params=spec.param_count(), final_test_accuracy=0.7298,
        layers=[
            dict(name=layer.name, kind=layer.kind, shape=list(layer.output_shape), native_shape=list(layer.output_shape), params=layer.param_count)
            for layer in spec.layers()
        ],
        history=[
            dict(epoch=epoch + 1, train_loss=loss + offset, train_accuracy=0.5, test_loss=loss, test_accuracy=0.6 + 0.05 * epoch,
                 seconds=3.0, images_per_second=20000.0)
            for epoch, loss in enumerate(EPOCH_LOSSES)
        ],
        step_losses=[loss + offset for loss in STEP_LOSSES],
        speed=dict(train_images_per_second=20451.3 - 1000 * index, warmup_seconds=1.27 + index, eval_images_per_second=51234.0,
                   peak_rss_mb=427.4 + index, threads=1, settings=["omp-proc-bind"]),
    )


def make_summary(names=FRAMEWORKS, offsets=None) -> dict:
    """A plausible summary.json; offsets (default 1e-6 * index) move each framework's losses off the shared curve."""
    offsets = offsets if offsets is not None else [1e-6 * i for i in range(len(names))]
    names = list(names)
    return dict(
        config=dict(variant="classic", optimizer="sgd", lr=0.1, batch_size=128, epochs=len(EPOCH_LOSSES), seeds=[0],
                    train_subset=None, test_subset=None),
        environment=dict(python="3.11", platform="Linux", cpu="a CPU", cpu_count=2, frameworks={}),
        frameworks={name: framework_entry(i, offset) for i, (name, offset) in enumerate(zip(names, offsets))},
        parity=[
            check("layer shapes equal the spec", names[:1], 0, 0, "all layers match"),
            check("per-epoch training losses agree", names, 3e-6, 1e-3, "max spread over epochs"),
        ],
        cross_eval={evaluator: {source: 0.7298 for source in names} for evaluator in names},
        seed_statistics={},
        seconds=12.0,
        speed=dict(
            peak=dict(gflops=156.8, cores=2, ghz=2.45, clock_source="'cpu MHz' in /proc/cpuinfo", flops_per_cycle=32, vector_isa="avx2"),
            frameworks={name: dict(share_of_peak=0.589 - 0.01 * i) for i, name in enumerate(names)},
        ),
    )


def table_rows(summary: dict, title: str) -> dict[str, dict[str, str]]:
    """A table's rows by their first cell."""
    (table,) = [t for t in tables(summary) if t.title.startswith(title)]
    return {row[0]: dict(zip(table.header, row)) for row in table.rows}


def test_speed_table_shows_each_frameworks_numbers():
    summary = make_summary()
    speed = table_rows(summary, "Speed in this run")
    assert speed["pytorch"] == {
        "framework": "pytorch", "threads": "1", "training images/s": "20,451", "% of fp32 peak": "58.9", "warm-up/compile s": "1.27",
        "evaluation images/s": "51,234", "peak resident memory MB": "427", "runtime settings (common/runtime.py)": "omp-proc-bind",
    }
    assert speed["mxnet"]["warm-up/compile s"] == "4.27"
    assert "| pytorch | 1 | 20,451 | 58.9 | 1.27 | 51,234 | 427 | omp-proc-bind |" in markdown(summary)
    assert "157 GFLOP/s = 2 cores x 2.45 GHz" in markdown(summary)
    assert "<td>20,451</td>" in html_page(summary, b"")


def test_what_a_default_costs_is_a_row_of_the_cpu_defaults_difference():
    summary = make_summary()
    section = lambda text: text[text.index("### CPU defaults"):]
    assert "Not measured on this CPU yet: tox -e bench measures it" in section(markdown(summary))
    summary["speed"]["defaults"] = {"tensorflow": [
        dict(setting="onednn: TF_ENABLE_ONEDNN_OPTS=1 left out", default_images_per_second=3200.4, tuned_images_per_second=8000.0),
    ]}
    shown = section(markdown(summary))
    assert "| tensorflow | `onednn: TF_ENABLE_ONEDNN_OPTS=1 left out` | training images/s (tox -e bench) | 8,000 | 3,200 |" in shown
    assert "Not measured on this CPU yet" not in shown

def test_layers_are_matched_by_name_and_gaps_show_as_missing():
    summary = make_summary()
    jax_layers = summary["frameworks"]["jax"]["layers"]
    summary["frameworks"]["jax"]["layers"] = [row for row in jax_layers if row["name"] not in ("act1", "pool1", "act4")][::-1]
    summary["frameworks"]["tensorflow"]["layers"].append(dict(name="extra_dropout", kind="Dropout", shape=[84], native_shape=[84], params=0))
    layers = table_rows(summary, "Layer shapes")
    measured = {layer.name: f"{layer.kind} {layer.output_shape}" for layer in spec.layers()}
    for name in ("act1", "pool1", "act4"):
        assert layers[name]["jax"] == MISSING and layers[name]["pytorch"] == measured[name]
    assert layers["fc3"]["jax"] == "dense (10,)"  # reversed order, still fc3's row
    assert layers["extra_dropout"]["spec C,H,W"] == "not in the spec" and layers["extra_dropout"]["tensorflow"] == "Dropout (84,)"
    assert layers["extra_dropout"]["pytorch"] == MISSING
    assert "| act1 | (6, 28, 28) | 0 | sigmoid (6, 28, 28) | sigmoid (6, 28, 28) | missing |" in markdown(summary)
    assert "<td class='missing'>missing</td>" in html_page(summary, b"")


def test_a_failed_framework_with_only_status_error_and_version_renders(tmp_path):
    summary = make_summary()
    summary["frameworks"]["mxnet"] = dict(status="failed", error="ImportError: no module named mxnet\nTraceback ...", version=None)
    rows = table_rows(summary, "Frameworks")
    assert rows["mxnet"]["error"] == "ImportError: no module named mxnet" and rows["mxnet"]["params"] == "-"
    assert "mxnet" not in table_rows(summary, "Speed in this run")
    assert "mxnet" not in table_rows(summary, "Layer shapes")["conv1"]
    assert "ImportError: no module named mxnet" in markdown(summary)
    assert "ImportError: no module named mxnet" in html_page(summary, plot_curves(summary, tmp_path / "curves.png").read_bytes())


def test_a_summary_without_speed_or_step_losses_renders(tmp_path):
    summary = make_summary()
    for entry in summary["frameworks"].values():
        del entry["speed"], entry["step_losses"]
    assert "Speed in this run" not in markdown(summary)
    _, step_axis, _ = curves_figure(summary).axes
    assert "fewer than two frameworks recorded first-step losses" in step_axis.texts[0].get_text()
    assert "<h2>Frameworks</h2>" in html_page(summary, plot_curves(summary, tmp_path / "curves.png").read_bytes())


def test_deviation_panels_plot_the_distance_from_the_mean_on_log_axes():
    summary = make_summary()
    epoch_axis, step_axis, accuracy_axis = curves_figure(summary).axes
    assert epoch_axis.get_yscale() == step_axis.get_yscale() == "log"
    losses = np.array([[e["train_loss"] for e in entry["history"]] for entry in summary["frameworks"].values()])
    expected = np.abs(losses - losses.mean(axis=0))
    plotted = np.array([line.get_ydata() for line in epoch_axis.get_lines()])
    np.testing.assert_allclose(plotted, expected, rtol=1e-6)
    assert [line.get_label() for line in step_axis.get_lines()] == list(FRAMEWORKS)
    assert accuracy_axis.get_yscale() == "linear" and len(accuracy_axis.get_lines()) == len(FRAMEWORKS)


def test_identical_curves_are_drawn_at_the_floor(tmp_path):
    summary = make_summary(offsets=[0.0] * len(FRAMEWORKS))
    epoch_axis, step_axis, _ = curves_figure(summary).axes
    for axis in (epoch_axis, step_axis):
        assert all(np.all(line.get_ydata() == DEVIATION_FLOOR) for line in axis.get_lines())
    assert f"{DEVIATION_FLOOR:g}" in epoch_axis.get_ylabel()
    png = plot_curves(summary, tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_one_finished_framework_has_nothing_to_compare(tmp_path):
    summary = make_summary(names=["pytorch"])
    epoch_axis, step_axis, accuracy_axis = curves_figure(summary).axes
    for axis in (epoch_axis, step_axis):
        assert not axis.get_lines() and "nothing to compare" in axis.texts[0].get_text()
    assert len(accuracy_axis.get_lines()) == 1
    assert plot_curves(summary, tmp_path / "curves.png").stat().st_size > 10_000


def test_frameworks_without_step_losses_are_left_out_of_the_step_panel():
    summary = make_summary()
    summary["frameworks"]["jax"]["step_losses"] = []
    del summary["frameworks"]["mxnet"]["step_losses"]
    _, step_axis, _ = curves_figure(summary).axes
    assert [line.get_label() for line in step_axis.get_lines()] == ["pytorch", "tensorflow"]
    summary["frameworks"]["tensorflow"]["step_losses"] = []
    _, step_axis, _ = curves_figure(summary).axes
    assert "fewer than two frameworks recorded" in step_axis.texts[0].get_text()


def pitfall_record(title: str, correct, mistaken, metric="final test accuracy (10 epochs)", framework="pytorch", **extra) -> dict:
    return dict(difference=title, mistake="model = LeNet()", framework=framework, metric=metric, correct=correct, mistaken=mistaken,
                test=registry_entry(title).tests[0], **extra)


def with_pitfalls(summary: dict, records: list[dict]) -> dict:
    return dict(summary, pitfalls=records, pitfall_runs={name: dict(status="ok") for name in summary["frameworks"]})


def quick(summary: dict) -> dict:
    return dict(summary, config=dict(summary["config"], epochs=2, train_subset=6000, test_subset=2000))


def headings(page: str) -> list[str]:
    return [re.sub("<[^>]+>", "", text) for text in re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", page)]


def test_without_pitfalls_the_lesson_shows_code_and_tests_and_one_line_on_measuring():
    page = html_page(make_summary(), b"")
    assert page.count(MEASURE_COMMAND) == 1 and "<td>-</td>" not in page
    for difference in DIFFERENCES:
        assert f"<h3>{difference.title}</h3>".replace("&", "&amp;") in page
        for handling in difference.handled.values():
            for pointer in handling.code:
                assert html.escape(code(pointer)) in page, pointer  # the code itself, read from the source
            for test in handling.tests:
                assert f"title='{html.escape(test)}'" in page, test
    text = markdown(make_summary())
    assert "### Loss" in text and "```diff" in text and text.count(MEASURE_COMMAND) == 1


def test_the_network_is_each_frameworks_layer_table_and_build_not_the_whole_file():
    page = html_page(make_summary(), b"")
    network = page[page.index("id='network'"):]
    for name, pointers in NETWORK.items():
        assert f"<b>{name}</b>" in network and all(html.escape(code(p)) in network for p in pointers)
    assert "def resolve_device" not in network and "import torch" not in network


def test_headings_are_short_and_explanations_sit_under_them():
    summary = with_pitfalls(make_summary(), [pitfall_record("Initializer", 0.7298, 0.1)])
    summary["data_parallel"] = {"pytorch": {"2": dict(status="failed", error="boom")}}
    page = html_page(summary, b"")
    assert all(len(heading) <= 40 for heading in headings(page)), [h for h in headings(page) if len(h) > 40]
    assert "<h2>Data parallel</h2><p>N replicas against 1" in page


def test_a_measured_cost_sits_beside_its_difference():
    record = pitfall_record("Loss", 0.7801, "diverged: epoch 1: training loss is nan", metric="final test accuracy, or the divergence")
    page = html_page(with_pitfalls(make_summary(), [record]), b"")
    loss = page[page.index("<h3>Loss</h3>"):page.index("<h3>Optimizer defaults</h3>")]
    assert "<td>0.7801</td><td>diverged: epoch 1: training loss is nan</td>" in loss and "model = LeNet()" in loss
    assert MEASURE_COMMAND not in page  # measured: no line on how to measure
    assert "| pytorch | `model = LeNet()` | final test accuracy, or the divergence | 0.7801 |" in markdown(with_pitfalls(make_summary(), [record]))


def test_a_short_run_that_cannot_show_the_cost_says_so_and_names_the_run_that_does():
    at_chance = pitfall_record("Initializer", 0.1015, 0.1015)
    shown = pitfall_record("Kernel layout", 0.0, 2.5, metric="forward max abs error vs oracle")
    short_page = html_page(quick(with_pitfalls(make_summary(), [at_chance, shown])), b"")
    note = f"This short run cannot show the cost: both runs are still at chance. The full recipe shows it: {MEASURE_COMMAND}"
    assert short_page.count(note) == 1  # the forward error needs no training: it shows in the short run too
    full = with_pitfalls(make_summary(), [pitfall_record("Initializer", 0.7298, 0.7298)])
    full_page = html_page(dict(full, config=dict(full["config"], epochs=10)), b"")
    assert "No cost in this run: both runs give the same number." in full_page


def test_a_records_curves_are_drawn_beside_its_numbers():
    curved = pitfall_record("Initializer", 0.7298, 0.1, curves={"correct": [0.3, 0.6, 0.7298], "mistaken": [0.1, 0.1, 0.1]},
                            curve_label="test accuracy")
    flat = pitfall_record("Batch order", 0.6, 0.55, curves={"common": [0.9], "own": [0.95]})  # one point: nothing to draw
    page = html_page(with_pitfalls(make_summary(), [curved, flat]), b"")
    assert page.count("class='cost-plot'") == 1
    initializer = page[page.index("<h3>Initializer</h3>"):page.index("<h3>Loss</h3>")]
    assert "class='cost-plot'" in initializer


def test_records_under_a_title_the_registry_lacks_are_flagged():
    stray = dict(pitfall_record("Loss", 0.7, 0.1), difference="Loss function")
    page = html_page(with_pitfalls(make_summary(), [stray]), b"")
    assert "Measured under titles the registry lacks" in page and "Add them to common/differences.py" in page


# Appended to a copy of the page: once laid out, it writes into the DOM the page's width, the window's,
# the page's height, and how many code blocks and tables scroll sideways inside their own box.
WIDTH_PROBE = """<script>addEventListener('load', () => {
  const probe = document.createElement('div');
  const root = document.documentElement;
  const sideways = [...document.querySelectorAll('pre, table')].filter(e => e.scrollWidth > e.clientWidth + 1).length;
  probe.id = 'width-check';
  probe.textContent = `${root.scrollWidth} ${root.clientWidth} ${window.innerWidth} ${root.scrollHeight} ${sideways}`;
  document.body.append(probe);
});</script>"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_fits_a_1366_px_laptop_screen(tmp_path):
    summary = make_summary(names=[*FRAMEWORKS, "numpy"])  # five framework columns in the tables: the widest page
    long_error = "diverged: epoch 1: training loss is nan; lower the learning rate (now 0.1) " * 3
    summary = with_pitfalls(summary, [
        pitfall_record(difference.title, 0.7298, long_error, metric="final test accuracy, or the divergence " * 2, framework=name,
                       curves={"correct": [0.3, 0.6, 0.7298], "mistaken": [0.1, 0.1, 0.1]})
        for difference in DIFFERENCES for name in difference.handled
    ])
    page = html_page(summary, plot_curves(summary, tmp_path / "curves.png").read_bytes())
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "probe.html").write_text(page.replace("</body>", WIDTH_PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        ["chromium", *flags, "--window-size=1366,3000", "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "probe.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.search(r'id="width-check">(\d+) (\d+) (\d+) (\d+) (\d+)<', dom)
    scroll_width, client_width, window_width, height, sideways = map(int, found.groups())
    assert window_width == 1366
    assert scroll_width <= client_width, f"the page is {scroll_width} px wide in a {client_width} px window: it scrolls sideways"
    assert sideways == 0, f"{sideways} code blocks or tables scroll sideways inside their box"
    shot = tmp_path / "report.png"  # the whole page, 1366 px wide
    subprocess.run(["chromium", *flags, f"--window-size=1366,{height}", f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one

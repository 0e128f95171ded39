"""The comparison report: report.md, curves.png and one self-contained report.html.

Everything comes from summary.json (common.harness), so a report can be rebuilt from the JSON.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common import spec
from common.files import atomic_write, write_text
from common.parity import passed, replica_gaps

REPO = Path(__file__).resolve().parents[1]

# Each framework difference the code handles, and where. One row per difference:
# (difference, why it changes numbers, {framework: "file::function"}).
DIFFERENCES = [
    (
        "Data layout",
        "Keras and Flax convolve NHWC; the interface is canonical NCHW, so they transpose at the boundary.",
        {
            "pytorch": "frameworks/pytorch/model.py::data_format (NCHW: nothing to do)",
            "tensorflow": "frameworks/tensorflow/model.py::to_nhwc",
            "jax": "frameworks/jax/model.py::to_nhwc",
            "mxnet": "frameworks/mxnet/model.py::data_format (NCHW: nothing to do)",
        },
    ),
    (
        "Kernel layout",
        "Canonical OIHW conv kernels and (out, in) matrices become HWIO and (in, out) in Keras and Flax.",
        {
            "pytorch": "frameworks/pytorch/convert.py::set_weights (the canonical layout)",
            "tensorflow": "common/weights.py::to_channels_last (oihw_to_hwio; dense kernels transposed)",
            "jax": "common/weights.py::to_channels_last (shared with Keras)",
            "mxnet": "frameworks/mxnet/convert.py::canonical_params (same layout, other names)",
        },
    ),
    (
        "Flatten order",
        "NHWC frameworks flatten H,W,C; fc1's canonical columns are C,H,W, so they are permuted.",
        {
            "pytorch": "frameworks/pytorch/model.py::_LAYERS (nn.Flatten is C,H,W)",
            "tensorflow": "common/weights.py::hwc_columns (through to_channels_last)",
            "jax": "common/weights.py::hwc_columns (through to_channels_last)",
            "mxnet": "frameworks/mxnet/model.py::_LAYERS (Dense flattens C,H,W itself: no Flatten layer)",
        },
    ),
    (
        "Padding",
        "Keras and Flax spell padding 'same'/'valid'; 'same' equals padding 2 only for a 5x5 kernel at stride 1.",
        {
            "pytorch": "frameworks/pytorch/model.py::_LAYERS",
            "tensorflow": "common/spec.py::padding_name",
            "jax": "common/spec.py::padding_name (upper-cased)",
            "mxnet": "frameworks/mxnet/model.py::_LAYERS",
        },
    ),
    (
        "Initializer",
        "Defaults differ (PyTorch Kaiming-uniform, Keras Glorot-uniform, Flax LeCun-normal, Gluon Uniform(0.07)); "
        "parity runs start from the canonical weights instead.",
        {
            "pytorch": "frameworks/pytorch/model.py::build",
            "tensorflow": "frameworks/tensorflow/model.py::_INIT",
            "jax": "frameworks/jax/model.py::XAVIER",
            "mxnet": "frameworks/mxnet/model.py::GLOROT_UNIFORM",
        },
    ),
    (
        "Loss",
        "Mean softmax cross-entropy on logits, spelled differently in each framework.",
        {
            "pytorch": "frameworks/pytorch/train.py::cross_entropy (F.cross_entropy)",
            "tensorflow": "frameworks/tensorflow/train.py::cross_entropy (SparseCategoricalCrossentropy(from_logits=True))",
            "jax": "frameworks/jax/train.py::cross_entropy (optax softmax_cross_entropy_with_integer_labels, mean)",
            "mxnet": "frameworks/mxnet/train.py::per_example_cross_entropy (see Trainer.reduce)",
        },
    ),
    (
        "Optimizer defaults",
        "Keras Adam's eps is 1e-7, the others' 1e-8, so every hyperparameter is passed from the config. Keras and MXNet "
        "also add eps before Adam's bias correction, PyTorch and optax after: Adam runs agree closely, not exactly.",
        {name: f"frameworks/{name}/train.py::make_optimizer" for name in ("pytorch", "tensorflow", "jax", "mxnet")},
    ),
    (
        "Gluon step(batch_size)",
        "gluon.Trainer.step(n) divides the gradient by n; with a per-example loss and n = the batch's length each update is "
        "SGD on the mean loss, also on the last, partial batch.",
        {"mxnet": "frameworks/mxnet/train.py::Trainer.reduce"},
    ),
    (
        "Batch order",
        "Each framework shuffles with its own generator (DataLoader, tf.data, jax.random, Gluon's DataLoader): the same "
        "seed gives other batches, so curves differ as much as two seeds do. All frameworks follow one common order.",
        {name: "common/data.py::batch_order" for name in ("pytorch", "tensorflow", "jax", "mxnet")},
    ),
    (
        "Dropout at evaluation",
        "Dropout must be off when evaluating, and each framework switches it differently: model.eval(), training=False, "
        "deterministic=True, or Gluon's predict mode outside autograd.record().",
        {
            "pytorch": "frameworks/pytorch/train.py::_logits (model.eval())",
            "tensorflow": "frameworks/tensorflow/train.py::_logits (training=False)",
            "jax": "frameworks/jax/model.py::_LAYERS (nnx.Dropout(deterministic=True))",
            "mxnet": "frameworks/mxnet/train.py::forward (predict mode)",
        },
    ),
    (
        "Float32 on GPUs (TF32)",
        "On Ampere and newer GPUs, cuDNN and cuBLAS run float32 convolutions and matmuls in TF32 (10 mantissa bits, "
        "about 1e-3 relative error) unless told not to; each framework is set to true float32, or parity at 1e-5 fails there.",
        {
            "pytorch": "frameworks/pytorch/model.py::torch.backends.cudnn.conv.fp32_precision",
            "tensorflow": "frameworks/tensorflow/model.py::tf.config.experimental.enable_tensor_float_32_execution",
            "jax": "frameworks/jax/model.py::PRECISION",
            "mxnet": "frameworks/mxnet/__init__.py::NVIDIA_TF32_OVERRIDE",
        },
    ),
    (
        "Data-parallel reduction",
        "A global batch split unevenly over N replicas (128 over 3) needs each replica's loss SUM over the global batch size: "
        "averaging per-replica means weighs small shards' examples more. DDP averages gradients (so x N), tf.distribute and "
        "kvstores sum them, JAX pads shards to equal size and masks the padding.",
        {
            "pytorch": "frameworks/pytorch/distributed.py::DataParallelTrainer.reduce",
            "tensorflow": "frameworks/tensorflow/train.py::Trainer.reduce",
            "jax": "frameworks/jax/train.py::mean_over_real_examples",
            "mxnet": "frameworks/mxnet/train.py::Trainer.reduce",
        },
    ),
    (
        "Scaling by 255",
        "TensorFlow's graph optimizer turns x / 255 into x * (1/255), one ulp off for half the pixel values; a lookup "
        "table keeps inputs bit-identical to the other frameworks.",
        {"tensorflow": "frameworks/tensorflow/train.py::PIXEL_VALUES"},
    ),
]


MISSING = "missing"  # a cell the summary has no value for: a parity check carries the failure, the report shows the gap


class Table(NamedTuple):
    title: str
    header: list[str]
    rows: list[list[str]]
    css_class: str = ""  # HTML only: "dense" for tables of long text


def _text(value, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt)


def _finished(frameworks: dict) -> list[str]:
    return [name for name, entry in frameworks.items() if entry.get("status") == "ok"]


def _frameworks_table(summary: dict) -> Table:
    rows = []
    for name, entry in summary["frameworks"].items():
        error = (entry.get("error") or "").splitlines()
        rows.append([
            name, entry.get("status", MISSING), _text(entry.get("version")), _text(entry.get("device")), _text(entry.get("params"), ","),
            _text(entry.get("final_test_accuracy"), ".4f"), error[0] if error else "",
        ])
    return Table("Frameworks", ["framework", "status", "version", "device", "params", "final test acc", "error"], rows)


def _layer_cell(row: dict | None) -> str:
    if row is None:
        return MISSING
    return f"{row.get('kind', '?')} {tuple(row.get('native_shape') or ())}"


def _layer_table(summary: dict) -> Table:
    """Spec layers and each framework's layer of the same name; a layer the spec lacks gets its own row."""
    frameworks = summary["frameworks"]
    names = _finished(frameworks)
    by_name = {n: {row.get("name"): row for row in frameworks[n].get("layers") or []} for n in names}
    expected = spec.layers(summary["config"]["variant"])
    rows = [[layer.name, str(layer.output_shape), str(layer.param_count), *(_layer_cell(by_name[n].get(layer.name)) for n in names)] for layer in expected]
    spec_names = {layer.name for layer in expected}
    extra = dict.fromkeys(layer for n in names for layer in by_name[n] if layer not in spec_names)
    rows += [[str(layer), "not in the spec", "-", *(_layer_cell(by_name[n].get(layer)) for n in names)] for layer in extra]
    return Table("Layer shapes (spec, then each framework's layer and native shape)", ["layer", "spec C,H,W", "spec params", *names], rows)


def _speed_table(summary: dict) -> Table | None:
    shares = (summary.get("speed") or {}).get("frameworks", {})
    rows = [
        [name, _text(speed.get("threads")), _text(speed.get("train_images_per_second"), ",.0f"),
         _text(None if (share := shares.get(name, {}).get("share_of_peak")) is None else 100 * share, ".1f"),
         _text(speed.get("warmup_seconds"), ".2f"), _text(speed.get("eval_images_per_second"), ",.0f"),
         _text(speed.get("peak_rss_mb"), ",.0f"), ", ".join(speed.get("settings") or []) or "-"]
        for name, entry in summary["frameworks"].items()
        if (speed := entry.get("speed")) is not None
    ]
    peak = (summary.get("speed") or {}).get("peak")
    title = "Speed in this run"
    if peak and peak.get("gflops"):
        title += (
            f". fp32 peak of this CPU: {peak['gflops']:.0f} GFLOP/s = {peak['cores']} cores x {peak['ghz']} GHz "
            f"({peak['clock_source']}) x {peak['flops_per_cycle']} FLOP/cycle ({peak['vector_isa']}); the share is of the "
            "cores each framework ran on"
        )
    header = ["framework", "threads", "training images/s", "% of fp32 peak", "warm-up/compile s", "evaluation images/s",
              "peak resident memory MB", "runtime settings (common/runtime.py)"]
    return Table(title, header, rows) if rows else None


def speed_defaults_table(summary: dict) -> Table | None:
    """What each framework's defaults cost in training images/s, from `tox -e bench` on this CPU (summary["speed"]["defaults"])."""
    speed = summary.get("speed") or {}
    rows = [
        [name, row["setting"], _text(row["default_images_per_second"], ",.0f"), _text(row["tuned_images_per_second"], ",.0f"),
         _text(row["tuned_images_per_second"] / row["default_images_per_second"], ".2f") + "x"]
        for name, costs in (speed.get("defaults") or {}).items()
        for row in costs
        if row.get("default_images_per_second")
    ]
    title = f"Speed: what the framework's defaults cost on this CPU ({speed.get('defaults_source', '')})"
    return Table(title, ["framework", "default kept", "images/s with it", "images/s with the suite's settings", "cost"], rows) if rows else None


def _parity_table(summary: dict) -> Table:
    rows = [
        [c.get("check", MISSING), ", ".join(c.get("frameworks", [])), _text(c.get("value"), ".3g"), _text(c.get("tolerance"), ".3g"),
         "pass" if c.get("ok") else "FAIL", c.get("detail", "")]
        for c in summary.get("parity", [])
    ]
    return Table("Parity checks", ["check", "frameworks", "value", "tolerance", "verdict", "detail"], rows)


def _cross_eval_table(summary: dict) -> Table | None:
    matrix = summary.get("cross_eval") or {}
    if not matrix:
        return None
    sources = list(dict.fromkeys(source for row in matrix.values() for source in row))
    return Table(
        "Cross-evaluation: test accuracy of each framework's trained weights (columns) run in each framework (rows)",
        ["evaluated in", *sources],
        [[evaluator, *(_text(row.get(s), ".4f") for s in sources)] for evaluator, row in matrix.items()],
    )


def _seed_table(summary: dict) -> Table | None:
    stats = summary.get("seed_statistics") or {}
    if not stats:
        return None
    rows = [[n, _text(s.get("mean"), ".4f"), _text(s.get("sd"), ".4f"), _text(s.get("n"))] for n, s in stats.items()]
    return Table("Final test accuracy over seeds", ["framework", "mean", "sd", "seeds"], rows)


def _measured(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"  # counts: parameters, features
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value).splitlines()[0][:160]


def _costs_table(summary: dict) -> Table:
    """"If you get it wrong": each difference, why it changes numbers, where the code handles it, and,
    with --pitfalls, what the mistake costs, measured for real beside the correct run, and the test that guards it."""
    records = summary.get("pitfalls") or []
    measured = bool(records)
    rows = []
    for title, why, where in DIFFERENCES:
        shown = [r for r in records if r["difference"] == title]
        for name, location in where.items():
            mine = [r for r in shown if r["framework"] == name] or [None]
            for found in mine:
                cost = (
                    f"{found['metric']}: {_measured(found['correct'])} correct, {_measured(found['mistaken'])} mistaken"
                    if found else ("not measured in this framework" if measured else "run compare.py --pitfalls")
                )
                rows.append([title, why, name, location, found["mistake"] if found else "-", cost, found["test"] if found else "-"])
                title, why = "", ""  # said once per difference
        for found in (r for r in shown if r["framework"] not in where):  # rows across frameworks (batch order)
            cost = f"{found['metric']}: {_measured(found['correct'])} correct, {_measured(found['mistaken'])} mistaken"
            rows.append(["", "", found["framework"], "-", found["mistake"], cost, found["test"]])
    return Table(
        "If you get it wrong: each framework difference, where the code handles it, and what mishandling it costs",
        ["difference", "why it changes numbers", "framework", "where it is handled", "the mistake", "what it costs (measured)", "test"],
        rows, "dense",
    )


# The report's sections in order. A new section is one function (summary -> Table, or None when the
# summary has nothing for it) added here; Markdown and HTML both render this list.
def _data_parallel_table(summary: dict) -> Table | None:
    """Per framework and N: the engine, how far N replicas land from 1, and throughput by N."""
    runs = summary.get("data_parallel") or {}
    if not runs:
        return None
    rows = []
    for name, by_replicas in runs.items():
        single = summary["frameworks"].get(name, {})
        if single.get("status") == "ok":
            speed = (single.get("speed") or {}).get("train_images_per_second")
            rows.append([name, "1", "single process", "-", "-", "-", "-", _text(speed, ",.0f")])
        for replicas, entry in by_replicas.items():
            if entry.get("status") != "ok":
                rows.append([name, replicas, f"failed: {(entry.get('error') or '').splitlines()[0][:120]}", "", "", "", "", ""])
                continue
            gaps = replica_gaps(entry, single)
            rows.append([
                name, replicas, entry["engine"], _text(gaps["step_loss"], ".2g"), _text(gaps["epoch_loss"], ".2g"),
                _text(gaps["final_accuracy"], ".4f"), _text(entry.get("replica_max_weight_difference"), ".2g"),
                _text(entry.get("images_per_second"), ",.0f"),
            ])
    return Table(
        "Data parallel: N replicas against 1 (the same start, the same batches, each global batch split over the replicas). "
        "Throughput is measured as it is: N replicas sharing one machine's cores get fewer threads each and add an "
        "all-reduce per step, so without a device per replica it stays flat or falls with N.",
        ["framework", "replicas", "engine", "max step-loss gap", "max epoch-loss gap", "final accuracy gap",
         "max weight difference between replicas", "training images/s"],
        rows, "dense",
    )


def _onnx_nodes(nodes: dict[str, int]) -> str:
    return ", ".join(f"{op} {count}" for op, count in nodes.items())


def _onnx_table(summary: dict) -> Table | None:
    """Each framework's trained model through its own ONNX exporter, run by onnxruntime (common/onnx_judge.py)."""
    exports = summary.get("onnx") or {}
    if not exports:
        return None
    rows = []
    for name, entry in exports.items():
        exporter = f"{entry['exporter']} ({entry['exporter_version']})" if entry.get("exporter") else "-"
        if entry.get("status") != "ok":
            reason = (entry.get("error") or "unknown error").splitlines()[0][:200]
            rows.append([name, exporter, "-", "-", "-", "-", "-", "-", f"failed: {reason}"])
            continue
        size = entry.get("size_bytes")
        rows.append([
            name, exporter, _text(entry.get("opset")), f"{entry.get('layout', '-')} {entry.get('input_shape', '')}",
            _onnx_nodes(entry.get("nodes") or {}), _text(size and size / 1024, ",.1f"), _text(entry.get("forward_error"), ".2g"),
            f"{_text(entry.get('accuracy'), '.4f')} ({_text(entry.get('framework_accuracy'), '.4f')} in {name})", "ok",
        ])
    runtime = next((e["runtime"] for e in exports.values() if e.get("runtime")), "onnxruntime")
    return Table(
        f"ONNX: each framework's trained model through its own exporter, run by {runtime}. Forward error: max abs logits "
        "difference from the float64 NumPy reference with the same weights, on the probe batch. N,H,W,C files keep the "
        "framework's layout and add Transpose nodes around ONNX's N,C,H,W convolutions.",
        ["framework", "exporter", "opset", "input", "nodes by op type", "file KiB", "forward error", "test accuracy in onnxruntime", "export"],
        rows, "dense",
    )


SECTIONS = [
    _frameworks_table, _layer_table, _speed_table, speed_defaults_table, _parity_table, _cross_eval_table, _onnx_table, _seed_table,
    _data_parallel_table,
    _costs_table,
]


def tables(summary: dict) -> list[Table]:
    """Every table of the report, shared by Markdown and HTML."""
    return [table for section in SECTIONS if (table := section(summary)) is not None]


DEVIATION_FLOOR = 1e-12  # a log axis has no zero: exact agreement is drawn at this floor
MARKER_STYLES = [("o", 10, "-"), ("s", 8, "--"), ("D", 6, ":"), ("^", 5, "-."), ("v", 4, "-")]  # nested: identical lines all stay visible


def _style(index: int) -> dict:
    marker, size, line = MARKER_STYLES[index % len(MARKER_STYLES)]
    return dict(color=f"C{index}", marker=marker, markersize=size, linestyle=line, fillstyle="none")


def _deviations(series: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """|value - mean over the frameworks| per framework and step, over the steps every framework has, floored for a log axis."""
    length = min(len(values) for values in series.values())
    values = np.array([v[:length] for v in series.values()], dtype=np.float64)
    return dict(zip(series, np.maximum(np.abs(values - values.mean(axis=0)), DEVIATION_FLOOR)))


def _plot_deviations(axis, series: dict[str, list[float]], colors: dict[str, int], title: str, what: str, xlabel: str) -> None:
    axis.set(title=title, xlabel=xlabel)
    recorded = {name: values for name, values in series.items() if values}
    if len(recorded) < 2:
        reason = "only one framework finished" if len(series) < 2 else f"fewer than two frameworks recorded {what}"
        axis.text(0.5, 0.5, f"{reason}:\nnothing to compare", ha="center", va="center", transform=axis.transAxes)
        axis.set(xticks=[], yticks=[])
        return
    for name, deviation in _deviations(recorded).items():
        axis.plot(np.arange(1, len(deviation) + 1), deviation, label=name, **_style(colors[name]))
    axis.set_yscale("log")
    axis.set_ylabel(f"|loss - mean over frameworks|\n(exact 0 drawn at {DEVIATION_FLOOR:g})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small")


def curves_figure(summary: dict):
    """The figure of curves.png: (a) epoch-loss and (b) first-step-loss deviations on log axes, (c) test accuracy.

    The frameworks' curves coincide, so plotting them would hide all but one line; the deviations show how close they are.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    frameworks = summary["frameworks"]
    colors = {name: i for i, name in enumerate(frameworks)}
    finished = _finished(frameworks)
    figure = Figure(figsize=(13, 4), layout="constrained")
    epoch_axis, step_axis, accuracy_axis = figure.subplots(1, 3, width_ratios=[1, 1, 0.7])
    history = {name: frameworks[name].get("history") or [] for name in finished}
    epoch_losses = {n: [e["train_loss"] for e in h] for n, h in history.items()}
    _plot_deviations(epoch_axis, epoch_losses, colors, "(a) training loss per epoch, deviation", "epoch losses", "epoch")
    step_losses = {n: frameworks[n].get("step_losses") or [] for n in finished}
    _plot_deviations(step_axis, step_losses, colors, "(b) loss of the first SGD steps, deviation", "first-step losses", "step")
    for name, epochs in history.items():
        accuracy_axis.plot([e["epoch"] for e in epochs], [e["test_accuracy"] for e in epochs], label=name, **_style(colors[name]))
    accuracy_axis.set(title="(c) test accuracy", xlabel="epoch", ylabel="accuracy")
    accuracy_axis.grid(alpha=0.3)
    if history:
        accuracy_axis.legend(fontsize="small")
    for axis in figure.axes:
        if axis.lines:  # an axis that says "nothing to compare" keeps its empty ticks
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def plot_curves(summary: dict, path: Path) -> Path:
    buffer = io.BytesIO()
    curves_figure(summary).savefig(buffer, format="png", dpi=110)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _verdict(summary: dict) -> str:
    if summary.get("partial"):
        return "PARTIAL (interrupted)"
    return "PASS" if passed(summary) else "FAIL"


def _recipe(summary: dict) -> str:
    config, environment = summary["config"], summary["environment"]
    return (
        f"Recipe: {config['variant']}, {config['optimizer']} lr {config['lr']}, batch {config['batch_size']}, "
        f"{config['epochs']} epochs, seeds {config['seeds']}. Environment: Python {environment['python']}, "
        f"{environment['cpu']} ({environment['cpu_count']} cores). Data from {summary.get('data_source', '-')}. "
        f"Wall time {summary.get('seconds', 0):.0f} s"
        + (f", plus {summary['reused_seconds']:.0f} s of framework runs reused from an earlier run." if summary.get("reused_seconds") else ".")
    )


def markdown(summary: dict) -> str:
    lines = [
        f"# LeNet-5 parity report: {_verdict(summary)}",
        "",
        _recipe(summary),
        "",
        "![curves](curves.png)",
    ]
    for table in tables(summary):
        lines += ["", f"## {table.title}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _model_tabs(names: list[str]) -> str:
    """The four model definitions side by side, as d2l's framework tabs show them (CSS only)."""
    radios, panels = [], []
    for i, name in enumerate(names):
        source = REPO / "frameworks" / name / "model.py"
        code = source.read_text() if source.exists() else "(not available)"
        checked = " checked" if i == 0 else ""
        radios.append(f'<input type="radio" name="tabs" id="tab-{name}"{checked}><label for="tab-{name}">{html.escape(name)}</label>')
        panels.append(f'<pre class="panel" id="panel-{name}"><code>{html.escape(code)}</code></pre>')
    rules = " ".join(f"#tab-{n}:checked ~ .panels #panel-{n} {{display:block}}" for n in names)
    return f'<div class="tabs">{"".join(radios)}<div class="panels">{"".join(panels)}</div></div><style>{rules}</style>'


# The page fits a 1366 px laptop screen: cells may break anywhere (file::function paths have no spaces),
# tables never grow past the page, and code panels scroll inside their own box. Headers and the names
# in the differences table's first column break only between words: squeezed, they broke mid-word.
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px;max-width:100%;table-layout:auto}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th,table.dense td:first-child{overflow-wrap:normal}table.dense{font-size:12px;width:100%}table.dense td{padding:3px 5px}
th{background:#f3f3f3}.pass{color:#17803d}.fail{color:#c62828;font-weight:bold}.missing{color:#c62828}img{max-width:100%;height:auto}
.tabs input{display:none}.tabs label{display:inline-block;padding:6px 14px;border:1px solid #ccc;border-bottom:none;cursor:pointer;background:#f3f3f3}
.tabs input:checked+label{background:#fff;font-weight:bold}
.panel{display:none;border:1px solid #ccc;padding:1em;overflow:auto;max-width:100%;max-height:80vh;box-sizing:border-box;font-size:13px;margin:0}
"""
CELL_CLASSES = {"pass": "pass", "FAIL": "fail", MISSING: "missing"}


def html_page(summary: dict, png: bytes) -> str:
    verdict = _verdict(summary)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>LeNet-5 parity report</title><style>{STYLE}</style></head><body>",
        f"<h1>LeNet-5 parity report: <span class='{verdict.lower()}'>{verdict}</span></h1>",
        f"<p>{html.escape(_recipe(summary))}</p>",
        "<img id='curves' alt='loss deviations from the mean over frameworks (log scale) and test accuracy per epoch' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
    ]
    for table in tables(summary):
        css = f" class='{table.css_class}'" if table.css_class else ""
        parts.append(f"<h2>{html.escape(table.title)}</h2><table{css}><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in table.header)}</tr>")
        for row in table.rows:
            cells = "".join(
                f"<td class='{CELL_CLASSES[cell]}'>{cell}</td>" if cell in CELL_CLASSES else f"<td>{html.escape(cell)}</td>" for cell in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append("<h2>The four model definitions</h2>" + _model_tabs(list(summary["frameworks"])))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(summary: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    curves = plot_curves(summary, out / "curves.png")
    return dict(
        markdown=write_text(out / "report.md", markdown(summary)),
        curves=curves,
        html=write_text(out / "report.html", html_page(summary, curves.read_bytes())),
    )

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

from common import lesson, spec
from common.files import atomic_write, write_text
from common.parity import passed, replica_gaps

REPO = Path(__file__).resolve().parents[1]
MISSING = "missing"  # a cell the summary has no value for: a parity check carries the failure, the report shows the gap


class Table(NamedTuple):
    title: str  # a short heading
    header: list[str]
    rows: list[list[str]]
    css_class: str = ""  # HTML only: "dense" for tables of long text
    note: str = ""  # the explanation, under the heading


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
    return Table(
        "Layer shapes", ["layer", "spec C,H,W", "spec params", *names], rows,
        note="The spec's output shape and parameter count per layer, then each framework's layer and its native shape.",
    )


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
    note = ""
    if peak and peak.get("gflops"):
        note = (
            f"fp32 peak of this CPU: {peak['gflops']:.0f} GFLOP/s = {peak['cores']} cores x {peak['ghz']} GHz "
            f"({peak['clock_source']}) x {peak['flops_per_cycle']} FLOP/cycle ({peak['vector_isa']}); the share is of the "
            "cores each framework ran on."
        )
    header = ["framework", "threads", "training images/s", "% of fp32 peak", "warm-up/compile s", "evaluation images/s",
              "peak resident memory MB", "runtime settings (common/runtime.py)"]
    return Table("Speed in this run", header, rows, note=note) if rows else None


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
        "Cross-evaluation",
        ["evaluated in", *sources],
        [[evaluator, *(_text(row.get(s), ".4f") for s in sources)] for evaluator, row in matrix.items()],
        note="Test accuracy of each framework's trained weights (columns), run in each framework (rows).",
    )


def _seed_table(summary: dict) -> Table | None:
    stats = summary.get("seed_statistics") or {}
    if not stats:
        return None
    rows = [[n, _text(s.get("mean"), ".4f"), _text(s.get("sd"), ".4f"), _text(s.get("n"))] for n, s in stats.items()]
    return Table("Final test accuracy over seeds", ["framework", "mean", "sd", "seeds"], rows)


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
        "Data parallel",
        ["framework", "replicas", "engine", "max step-loss gap", "max epoch-loss gap", "final accuracy gap",
         "max weight difference between replicas", "training images/s"],
        rows, "dense",
        note="N replicas against 1: the same start, the same batches, each global batch split over the replicas. "
        "Throughput is measured as it is: replicas sharing one machine's cores get fewer threads each and add an "
        "all-reduce per step, so without a device per replica it stays flat or falls with N.",
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
        "ONNX exports",
        ["framework", "exporter", "opset", "input", "nodes by op type", "file KiB", "forward error", "test accuracy in onnxruntime", "export"],
        rows, "dense",
        note=f"Each framework's trained model through its own exporter, run by {runtime}. Forward error: max abs logits "
        "difference from the float64 NumPy reference with the same weights, on the probe batch. N,H,W,C files keep the "
        "framework's layout and add Transpose nodes around ONNX's N,C,H,W convolutions.",
    )


SECTIONS = [
    _frameworks_table, _layer_table, _speed_table, _parity_table, _cross_eval_table, _onnx_table, _seed_table,
    _data_parallel_table,
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
        lines += ["", f"## {table.title}", *(["", table.note] if table.note else [])]
        lines += ["", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    lines += ["", *lesson.differences_markdown(summary)]
    return "\n".join(lines) + "\n"


# The page fits a 1366 px laptop screen: cells may break anywhere (file::function paths have no spaces),
# tables never grow past the page, and code wraps inside its column instead of scrolling sideways.
# Headers break only between words: squeezed, they broke mid-word.
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:1.5em auto;padding:0 1em;color:#222}
h2{margin:1.4em 0 .3em}h3{margin:0 0 .3em}h4{margin:.2em 0;font-size:14px}p{margin:.3em 0 .6em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:14px;max-width:100%;table-layout:auto}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{overflow-wrap:normal;background:#f3f3f3}table.dense{font-size:12px;width:100%}table.dense td{padding:3px 5px}
.pass{color:#17803d}.fail{color:#c62828;font-weight:bold}.missing{color:#c62828}img{max-width:100%;height:auto}
nav{font-size:13px;margin:.4em 0 1em}.measured{font-weight:600}
.difference{border-top:2px solid #ddd;padding:.8em 0 .4em}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:10px}
figure{margin:0;min-width:0;border:1px solid #ddd;border-radius:4px;background:#fafafa}
figcaption{padding:3px 8px;background:#eef2f7;font-size:13px}
pre{margin:0;padding:6px 8px;font-size:12px;line-height:1.35;white-space:pre-wrap;overflow-wrap:anywhere;max-height:30em;overflow:auto}
.where{color:#6a737d}.test{margin:0;padding:3px 8px;font-size:12px;border-top:1px solid #e3e3e3;overflow-wrap:anywhere}.test .file{color:#6a737d}
.beside{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,2fr);gap:12px;margin-top:8px}
.diff{background:#fff;border:1px solid #ddd}.del{color:#b31d28;background:#ffeef0}.ins{color:#22863a;background:#e6ffed}
table.costs{font-size:12px;width:100%;margin:0}table.costs td:nth-child(n+4){overflow-wrap:normal}tr.no-effect td{color:#666}
.network pre{max-height:none}.cost-plot{display:block;margin-top:6px;max-width:460px}
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
        note = f"<p>{html.escape(table.note)}</p>" if table.note else ""
        parts.append(f"<h2>{html.escape(table.title)}</h2>{note}<table{css}><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in table.header)}</tr>")
        for row in table.rows:
            cells = "".join(
                f"<td class='{CELL_CLASSES[cell]}'>{cell}</td>" if cell in CELL_CLASSES else f"<td>{html.escape(cell)}</td>" for cell in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts += [lesson.differences_html(summary), lesson.network_html()]
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

"""The comparison report: report.md, curves.png and one self-contained report.html.

Everything comes from summary.json (common.harness), so a report can be rebuilt from the JSON.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from common import spec
from common.parity import passed
from common.files import atomic_write, write_text

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
            "tensorflow": "frameworks/tensorflow/convert.py::_conv_kernel, _dense_kernel",
            "jax": "frameworks/jax/convert.py::_to_flax",
            "mxnet": "frameworks/mxnet/convert.py::canonical_params (same layout, other names)",
        },
    ),
    (
        "Flatten order",
        "NHWC frameworks flatten H,W,C; fc1's canonical columns are C,H,W, so they are permuted.",
        {
            "pytorch": "frameworks/pytorch/model.py::_LAYERS (nn.Flatten is C,H,W)",
            "tensorflow": "frameworks/tensorflow/convert.py::_to_keras (with common/weights.py::hwc_columns)",
            "jax": "frameworks/jax/convert.py::_to_flax",
            "mxnet": "frameworks/mxnet/model.py::_LAYERS (Dense flattens C,H,W itself: no Flatten layer)",
        },
    ),
    (
        "Padding",
        "Keras and Flax spell padding 'same'/'valid'; 'same' equals padding 2 only for a 5x5 kernel at stride 1.",
        {
            "pytorch": "frameworks/pytorch/model.py::_LAYERS",
            "tensorflow": "frameworks/tensorflow/model.py::_padding",
            "jax": "frameworks/jax/model.py::flax_padding",
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
            "pytorch": "frameworks/pytorch/train.py::Trainer.step (F.cross_entropy)",
            "tensorflow": "frameworks/tensorflow/train.py::LOSS (SparseCategoricalCrossentropy(from_logits=True))",
            "jax": "frameworks/jax/train.py::_loss (optax softmax_cross_entropy_with_integer_labels, mean)",
            "mxnet": "frameworks/mxnet/train.py::_CROSS_ENTROPY (per example; see step(batch_size))",
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
        {"mxnet": "frameworks/mxnet/train.py::Trainer.step"},
    ),
    (
        "Scaling by 255",
        "TensorFlow's graph optimizer turns x / 255 into x * (1/255), one ulp off for half the pixel values; a lookup "
        "table keeps inputs bit-identical to the other frameworks.",
        {"tensorflow": "frameworks/tensorflow/train.py::PIXEL_VALUES"},
    ),
]


def _history_table(frameworks: dict) -> list[list[str]]:
    rows = []
    for name, entry in frameworks.items():
        if entry["status"] != "ok":
            continue
        history = entry["history"]
        per_epoch = sum(e["seconds"] for e in history) / len(history)
        speed = sum(e["images_per_second"] for e in history) / len(history)
        rows.append([name, entry["version"], entry["device"], f"{entry['params']:,}", f"{entry['final_test_accuracy']:.4f}", f"{per_epoch:.2f}", f"{speed:,.0f}"])
    return rows


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report, shared by Markdown and HTML."""
    frameworks = summary["frameworks"]
    ok = [name for name, entry in frameworks.items() if entry["status"] == "ok"]
    variant = summary["config"]["variant"]
    shapes = [
        [layer.name, str(layer.output_shape), str(layer.param_count)]
        + [f"{frameworks[n]['layers'][i]['kind']} {tuple(frameworks[n]['layers'][i]['native_shape'])}" for n in ok]
        for i, layer in enumerate(spec.layers(variant))
    ]
    result = [
        ("Frameworks", ["framework", "status", "version", "error"],
         [[n, e["status"], str(e.get("version")), e.get("error", "").splitlines()[0] if e.get("error") else ""] for n, e in frameworks.items()]),
        ("Layer shapes (spec, then each framework's layer and native shape)", ["layer", "spec C,H,W", "spec params", *ok], shapes),
        ("Accuracy and speed", ["framework", "version", "device", "params", "final test acc", "s/epoch", "images/s"], _history_table(frameworks)),
        ("Parity checks", ["check", "frameworks", "value", "tolerance", "verdict", "detail"],
         [[c["check"], ", ".join(c["frameworks"]), f"{c['value']:.3g}", f"{c['tolerance']:.3g}", "pass" if c["ok"] else "FAIL", c["detail"]]
          for c in summary["parity"]]),
    ]
    matrix = summary.get("cross_eval") or {}
    if matrix:
        sources = list(next(iter(matrix.values())))
        result.append((
            "Cross-evaluation: test accuracy of each framework's trained weights (columns) run in each framework (rows)",
            ["evaluated in", *sources],
            [[evaluator, *(f"{row.get(s, float('nan')):.4f}" for s in sources)] for evaluator, row in matrix.items()],
        ))
    if summary.get("seed_statistics"):
        result.append((
            "Final test accuracy over seeds", ["framework", "mean", "sd", "seeds"],
            [[n, f"{s['mean']:.4f}", f"{s['sd']:.4f}", str(s["n"])] for n, s in summary["seed_statistics"].items()],
        ))
    result.append((
        "Framework differences the code handles", ["difference", "why", *frameworks],
        [[title, why, *(where.get(n, "-") for n in frameworks)] for title, why, where in DIFFERENCES],
    ))
    return result


def plot_curves(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, entry in summary["frameworks"].items():
        if entry["status"] != "ok":
            continue
        epochs = [e["epoch"] for e in entry["history"]]
        loss_axis.plot(epochs, [e["train_loss"] for e in entry["history"]], marker="o", label=name)
        accuracy_axis.plot(epochs, [e["test_accuracy"] for e in entry["history"]], marker="o", label=name)
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="mean cross-entropy")
    accuracy_axis.set(title="test accuracy", xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _verdict(summary: dict) -> str:
    return "PASS" if passed(summary) else "FAIL"


def _recipe(summary: dict) -> str:
    config, environment = summary["config"], summary["environment"]
    return (
        f"Recipe: {config['variant']}, {config['optimizer']} lr {config['lr']}, batch {config['batch_size']}, "
        f"{config['epochs']} epochs, seeds {config['seeds']}. Environment: Python {environment['python']}, "
        f"{environment['cpu']} ({environment['cpu_count']} cores). Wall time {summary.get('seconds', 0):.0f} s."
    )


def markdown(summary: dict) -> str:
    lines = [
        f"# LeNet-5 parity report: {_verdict(summary)}",
        "",
        _recipe(summary),
        "",
        "![curves](curves.png)",
    ]
    for title, header, rows in tables(summary):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
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


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pass{color:#17803d}.fail{color:#c62828;font-weight:bold}img{max-width:100%}
.tabs input{display:none}.tabs label{display:inline-block;padding:6px 14px;border:1px solid #ccc;border-bottom:none;cursor:pointer;background:#f3f3f3}
.tabs input:checked+label{background:#fff;font-weight:bold}.panel{display:none;border:1px solid #ccc;padding:1em;overflow:auto;font-size:13px;margin:0}
"""


def html_page(summary: dict, png: bytes) -> str:
    verdict = _verdict(summary)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>LeNet-5 parity report</title><style>{STYLE}</style></head><body>",
        f"<h1>LeNet-5 parity report: <span class='{verdict.lower()}'>{verdict}</span></h1>",
        f"<p>{html.escape(_recipe(summary))}</p>",
        f"<img id='curves' alt='training loss and test accuracy per epoch' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
    ]
    for title, header, rows in tables(summary):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>")
        for row in rows:
            cells = "".join(
                f"<td class='{cell.lower()}'>{cell}</td>" if cell in ("pass", "FAIL") else f"<td>{html.escape(cell)}</td>" for cell in row
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

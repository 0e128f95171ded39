"""The fifth judge: every framework's ONNX export, run by onnxruntime, against the float64 oracle.

Each framework exports its trained model with its own exporter, in its own process
(frameworks/<name>/export.py). Here, in the harness's process, onnxruntime runs each file and two
things are checked: the logits on the probe batch against common.reference with the same trained
weights (absolute, as every forward check: onnxruntime's Sigmoid returns exactly 0 below about
-17, where a relative error means nothing), and the test accuracy against the framework's own.

onnx and onnxruntime are imported inside the functions: common/ imports no framework, and a
missing runtime becomes a failed row that says so, not a failed import.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from common import reference, spec
from common.parity import CROSS_EVAL_TOL, FORWARD_TOL, check

# The opset every exporter that takes one is asked for. 18 is the newest tf2onnx 1.17 writes, so all
# three such files share it. onnxruntime's AveragePool kernel changed at opset 19; for LeNet's 2x2,
# stride-2, unpadded pools the PyTorch and JAX files at 18, 19, 21 and 23 all gave the same logits
# (measured; README, "ONNX"). MXNet's exporter takes no opset (frameworks/mxnet/export.py).
EXPORT_OPSET = 18
RUNTIME = "onnxruntime"  # the cross-evaluation matrix's row for the exported files
# frameworks/<name>/export.py's contract, checked by frameworks.get_part, and the frameworks that have
# one (the numpy oracle has no exporter): the harness needs no framework import to know which.
EXPORT_API = ("export_onnx",)
FRAMEWORKS_WITH_EXPORTER = ("pytorch", "tensorflow", "jax", "mxnet")
BATCH = 2000  # test images per onnxruntime call


def input_layout(shape: list) -> str:
    """N,C,H,W or N,H,W,C, from the graph's declared input shape (the batch axis may be a name or unknown)."""
    channels, height, width = spec.INPUT_SHAPE
    dims = [d if isinstance(d, int) else None for d in shape]
    if dims[1:] == [channels, height, width]:
        return "NCHW"
    if dims[1:] == [height, width, channels]:
        return "NHWC"
    raise ValueError(f"the graph's input has shape {shape}: neither N,{channels},{height},{width} nor N,{height},{width},{channels}")


def graph_facts(path: str | Path) -> dict:
    """What a reader wants to know about a file: its opset, its nodes by op type, its size, its input."""
    import onnx

    model = onnx.load(str(path))
    initializers = {tensor.name for tensor in model.graph.initializer}
    # Some exporters (MXNet's) also list the weights as graph inputs; the images are the input without a value.
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, found {[value.name for value in inputs]}")
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in inputs[0].type.tensor_type.shape.dim]
    nodes = Counter(node.op_type for node in model.graph.node)
    return dict(
        opset=next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None),
        nodes=dict(sorted(nodes.items(), key=lambda item: (-item[1], item[0]))),
        size_bytes=Path(path).stat().st_size,
        input_name=inputs[0].name,
        input_shape=shape,
        layout=input_layout(shape),
    )


def runtime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def session(path: str | Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: MXNet's weights-as-inputs draw one warning per tensor
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(runner, facts: dict, x_nchw: np.ndarray) -> np.ndarray:
    """onnxruntime's logits for a canonical N,C,H,W batch, fed in the layout the file declares."""
    x = np.asarray(x_nchw, np.float32)
    if facts["layout"] == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x)
    return np.concatenate([runner.run(None, {facts["input_name"]: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def judge(export: dict, weights: dict, probe_x, test_x, test_y, variant: str, framework_accuracy: float) -> dict:
    """One framework's row: what its worker said about the export, and what onnxruntime measured on the file.

    export is the worker's record (frameworks/worker.py::export_onnx); a failed one is passed on as it is.
    """
    entry = dict(export)
    if export.get("status") != "ok":
        return entry
    start = time.perf_counter()
    try:
        entry["runtime"] = runtime_version()
        facts = graph_facts(export["path"])
        entry.update(facts)
        runner = session(export["path"])
        entry["forward_error"] = float(np.max(np.abs(logits(runner, facts, probe_x) - reference.forward(weights, probe_x, variant))))
        entry["accuracy"] = float(np.mean(logits(runner, facts, test_x).argmax(axis=1) == np.asarray(test_y)))
        entry["framework_accuracy"] = framework_accuracy
    except Exception as err:  # a missing runtime, a damaged file, an op onnxruntime lacks: the row says which
        entry.update(status="failed", error=f"{RUNTIME} could not run {export['path']}: {type(err).__name__}: {err}")
    entry["judge_seconds"] = time.perf_counter() - start
    return entry


def onnx_checks(entries: dict[str, dict]) -> list[dict]:
    """Per framework: the export ran, its logits match the oracle, it scores what the framework scored."""
    checks = []
    for name, entry in entries.items():
        if entry.get("status") != "ok":
            reason = (entry.get("error") or "unknown error").splitlines()[0]
            checks.append(check(f"{name}'s ONNX export runs in {RUNTIME}", [name], 1, 0, f"failed: {reason}"))
            continue
        checks.append(check(
            f"{name}'s ONNX export matches the NumPy reference in {RUNTIME}", [name], entry["forward_error"], FORWARD_TOL,
            f"max abs logits difference on the probe, trained weights, opset {entry['opset']}, {entry['layout']} input",
        ))
        checks.append(check(
            f"{name}'s ONNX export scores the framework's test accuracy in {RUNTIME}", [name],
            abs(entry["accuracy"] - entry["framework_accuracy"]), CROSS_EVAL_TOL,
            f"{entry['accuracy']:.4f} in {RUNTIME}, {entry['framework_accuracy']:.4f} in {name}",
        ))
    return checks

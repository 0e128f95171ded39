"""The ONNX judge (common/onnx_judge.py) on small real ONNX files, and a failing exporter's row.

The files here are LeNet written with onnx.helper from the canonical weights, once N,C,H,W and once
N,H,W,C (a Transpose first, as the Keras and Flax exports have): the judge must read the layout
from the graph. The exporters' own files are tested in each framework's env (tests/test_onnx_export.py)
and judged in every comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

from common import onnx_judge, reference, spec
from common.parity import FORWARD_TOL
from common.report import markdown
from frameworks import worker
from tests.conftest import random_batch, random_weights

onnx = pytest.importorskip("onnx", reason="onnx is in requirements/compare.txt (the parity env)")
pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements/compare.txt (the parity env)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def lenet_onnx(path, weights, layout: str = "NCHW", opset: int = onnx_judge.EXPORT_OPSET):
    """The classic LeNet as an ONNX graph, by hand; layout "NHWC" takes N,H,W,C images and transposes them first."""
    channels, height, width = spec.INPUT_SHAPE
    nodes, current = [], "images"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [current], ["nchw"], perm=[0, 3, 1, 2]))
        current = "nchw"
    for layer in spec.layers("classic"):
        out, h = f"{layer.name}_out", layer.hyper
        if layer.kind == "conv":
            nodes.append(helper.make_node("Conv", [current, f"{layer.name}.weight", f"{layer.name}.bias"], [out], pads=[h["padding"]] * 4))
        elif layer.kind == "dense":
            nodes.append(helper.make_node("Gemm", [current, f"{layer.name}.weight", f"{layer.name}.bias"], [out], transB=1))
        elif layer.kind == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", [current], [out]))
        elif layer.kind == "avg_pool":
            nodes.append(helper.make_node("AveragePool", [current], [out], kernel_shape=[h["size"]] * 2, strides=[h["stride"]] * 2))
        elif layer.kind == "flatten":
            nodes.append(helper.make_node("Flatten", [current], [out]))
        current = out
    shape = ["batch", channels, height, width] if layout == "NCHW" else ["batch", height, width, channels]
    graph = helper.make_graph(
        nodes, "lenet", [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", spec.NUM_CLASSES])],
        [numpy_helper.from_array(np.asarray(w, np.float32), name) for name, w in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return str(path)


@pytest.fixture(scope="module")
def probe():
    x, _ = random_batch(32)
    weights = random_weights()
    labels = reference.forward(weights, x, "classic").argmax(axis=1)  # the oracle's own predictions: accuracy 1
    return weights, x, labels


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_judge_feeds_the_declared_layout_and_matches_the_oracle(tmp_path, probe, layout):
    weights, x, labels = probe
    path = lenet_onnx(tmp_path / "model.onnx", weights, layout)
    entry = onnx_judge.judge(dict(status="ok", path=path, exporter="onnx.helper", exporter_version="test"), weights, x[:8], x, labels, "classic", 1.0)
    assert entry["status"] == "ok", entry.get("error")
    assert entry["layout"] == layout and entry["opset"] == onnx_judge.EXPORT_OPSET
    assert entry["nodes"]["Conv"] == 2 and entry["nodes"].get("Transpose", 0) == (layout == "NHWC")
    assert entry["forward_error"] <= FORWARD_TOL
    assert entry["accuracy"] == 1.0
    assert all(c["ok"] for c in onnx_judge.onnx_checks({"fake": entry}))


def test_wrong_weights_fail_the_forward_check(tmp_path, probe):
    weights, x, labels = probe
    path = lenet_onnx(tmp_path / "model.onnx", {**weights, "fc3.bias": weights["fc3.bias"] + 1e-3})
    entry = onnx_judge.judge(dict(status="ok", path=path), weights, x[:8], x, labels, "classic", 1.0)
    checks = onnx_judge.onnx_checks({"fake": entry})
    assert [c["ok"] for c in checks] == [False, True]
    assert checks[0]["value"] == pytest.approx(1e-3, rel=1e-2)


def test_an_input_in_neither_layout_is_a_failed_row_saying_so(tmp_path, probe):
    weights, x, labels = probe
    path = lenet_onnx(tmp_path / "model.onnx", weights)
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
    onnx.save(model, path)
    entry = onnx_judge.judge(dict(status="ok", path=path), weights, x[:8], x, labels, "classic", 1.0)
    assert entry["status"] == "failed" and "neither N,1,28,28 nor N,28,28,1" in entry["error"]


def test_a_failed_export_gets_a_row_and_a_failed_check_naming_it(tmp_path):
    """The parity env has no torch: the worker's export of a PyTorch model fails the way a missing package does."""
    class NoTorch:
        name = "pytorch"

    export = worker.export_onnx(NoTorch(), model=None, path=str(tmp_path / "model.onnx"))
    assert export["status"] == "failed" and "torch" in export["error"] and not (tmp_path / "model.onnx").exists()
    entry = onnx_judge.judge(export, {}, None, None, None, "classic", 0.0)
    checks = onnx_judge.onnx_checks({"pytorch": entry})
    assert len(checks) == 1 and not checks[0]["ok"] and checks[0]["frameworks"] == ["pytorch"]
    assert "pytorch's ONNX export" in checks[0]["check"] and "torch" in checks[0]["detail"]
    summary = dict(
        config=dict(variant="classic", optimizer="sgd", lr=0.1, batch_size=128, epochs=1, seeds=[0]),
        environment=dict(python="3", cpu="cpu", cpu_count=1), frameworks={}, parity=checks, onnx={"pytorch": entry},
    )
    row = next(line for line in markdown(summary).splitlines() if line.startswith("| pytorch |") and "failed:" in line)
    assert "No module named 'torch'" in row


def test_a_backend_without_an_exporter_exports_nothing(tmp_path):
    class Oracle:
        name = "numpy"

    assert worker.export_onnx(Oracle(), model=None, path=str(tmp_path / "model.onnx")) is None

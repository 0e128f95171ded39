"""The trained model as an ONNX file, through MXNet's own exporter (mx.onnx.export_model)."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from common import spec
from frameworks.mxnet.model import model_device


def export_onnx(model: nn.HybridSequential, path: str | Path) -> dict:
    """Write the model (N,C,H,W input, any batch size) to `path`; say which exporter wrote it.

    mx.onnx.export_model takes no opset: it writes its ops in their opset-12/13 forms and stamps
    the file with the installed onnx's newest opset, so the file's opset comes from the onnx pin.
    """
    onnx = importlib.import_module("onnx")
    try:
        importlib.import_module("onnx.mapping")
    except ImportError as err:  # without this, MXNet says only "Onnx and protobuf need to be installed"
        raise ImportError(
            f"mx.onnx.export_model imports onnx.mapping, which onnx 1.19 removed; this env has onnx {onnx.__version__}: "
            "pip install -r requirements/mxnet.txt (onnx<=1.18)"
        ) from err
    model(mx.nd.zeros((1, *spec.INPUT_SHAPE), ctx=model_device(model)))  # a hybridized block exports the graph of its last call
    with tempfile.TemporaryDirectory() as folder:
        prefix = str(Path(folder) / "lenet")
        model.export(prefix)  # the symbol (graph JSON) and parameter files the exporter reads
        mx.onnx.export_model(
            f"{prefix}-symbol.json", f"{prefix}-0000.params", [(1, *spec.INPUT_SHAPE)], np.float32, str(path),
            dynamic=True, dynamic_input_shapes=[(None, *spec.INPUT_SHAPE)],
        )
    return dict(exporter="mx.onnx.export_model", exporter_version=f"mxnet {mx.__version__}, onnx {onnx.__version__}")

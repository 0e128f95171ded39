"""The trained model as an ONNX file, through PyTorch's own exporter (torch.onnx, dynamo by default)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from common import spec
from common.onnx_judge import EXPORT_OPSET
from frameworks.pytorch.model import model_device


@contextmanager
def _legacy_tf32_flags_readable():
    """torch.export reads cuDNN's legacy allow_tf32 flag, which torch 2.13 can only answer while conv and
    RNN are both at its default "tf32"; model.py set conv to "ieee", so tracing would raise. Tracing
    computes nothing on a GPU: the precision is put back afterwards, and the file holds no such setting."""
    conv, rnn = torch.backends.cudnn.conv, torch.backends.cudnn.rnn
    saved = conv.fp32_precision, rnn.fp32_precision
    conv.fp32_precision = rnn.fp32_precision = "tf32"
    try:
        yield
    finally:
        conv.fp32_precision, rnn.fp32_precision = saved


def export_onnx(model: torch.nn.Module, path: str | Path) -> dict:
    """Write the model (N,C,H,W input, any batch size) to `path`; say which exporter wrote it."""
    import onnxscript  # the dynamo exporter's op library: a missing install fails here, by name

    was_training = model.training
    model.eval()  # dropout off in the exported graph
    example = torch.zeros((1, *spec.INPUT_SHAPE), device=model_device(model))
    try:
        with _legacy_tf32_flags_readable():
            # external_data=False: one self-contained file, as the other exporters write.
            torch.onnx.export(
                model, (example,), str(path), input_names=["images"], output_names=["logits"], opset_version=EXPORT_OPSET,
                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False,
            )
    finally:
        model.train(was_training)
    return dict(exporter="torch.onnx.export (dynamo)", exporter_version=f"torch {torch.__version__}, onnxscript {onnxscript.__version__}")

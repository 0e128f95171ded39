"""The trained model as an ONNX file, through Keras's own exporter (model.export, which runs tf2onnx)."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from common import spec
from common.onnx_judge import EXPORT_OPSET


def export_onnx(model: keras.Model, path: str | Path) -> dict:
    """Write the model to `path`; say which exporter wrote it.

    The file takes Keras's own N,H,W,C input (tf2onnx keeps the layout and wraps each convolution
    in transposes, ONNX's Conv being N,C,H,W); the judge reads the layout from the graph's input.
    """
    import tf2onnx  # Keras reaches it lazily; importing it here makes a missing install fail by name

    channels, height, width = spec.INPUT_SHAPE
    # An explicit signature: Keras infers one only from a model it has already called.
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name="images")]
    # tf2onnx 1.17 supports opsets up to 18.
    model.export(str(path), format="onnx", input_signature=signature, opset_version=EXPORT_OPSET, verbose=False)
    return dict(exporter="keras model.export(format='onnx') via tf2onnx", exporter_version=f"keras {keras.__version__}, tf2onnx {tf2onnx.__version__}")

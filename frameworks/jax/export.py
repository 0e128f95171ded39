"""The trained model as an ONNX file, through jax2onnx, the exporter for JAX and Flax NNX."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import jax
import numpy as np

from common import spec
from common.onnx_judge import EXPORT_OPSET
from frameworks.jax.model import LeNet


def _load_plugins_lenet_needs() -> None:
    """jax2onnx registers its op converters by importing every module under jax2onnx/plugins, including
    its examples (Equinox and dm_pix models it builds and initialises at import): about 10 s on an idle
    2-core machine, a minute under load, for converters LeNet never uses. Importing the jax and flax
    trees first and marking the registry loaded keeps the cost to those. A jax2onnx without these
    internals is left to load everything itself: slower, same file."""
    from jax2onnx.plugins import plugin_system

    if getattr(plugin_system, "_already_imported_plugins", True) or not hasattr(plugin_system, "_import_tree"):
        return
    root = Path(plugin_system.__file__).parent
    for tree in ("jax", "flax"):
        plugin_system._import_tree(root / tree, f"jax2onnx.plugins.{tree}")
    plugin_system._already_imported_plugins = True


def export_onnx(model: LeNet, path: str | Path) -> dict:
    """Write the model to `path`; say which exporter wrote it.

    The file takes Flax's own N,H,W,C input (the model's __call__, not the canonical N,C,H,W of
    forward()); ONNX's Conv is N,C,H,W, so jax2onnx adds transposes around the convolutions. The
    judge reads the layout from the graph's input.
    """
    import jax2onnx

    _load_plugins_lenet_needs()
    channels, height, width = spec.INPUT_SHAPE
    images = jax.ShapeDtypeStruct(("batch", height, width, channels), np.float32)  # a named dimension: any batch size
    jax2onnx.to_onnx(
        model, [images], model_name="lenet", opset=EXPORT_OPSET, return_mode="file", output_path=str(path),
        input_names=["images"], output_names=["logits"],
    )
    return dict(exporter="jax2onnx.to_onnx", exporter_version=f"jax2onnx {version('jax2onnx')}, jax {jax.__version__}")

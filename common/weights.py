"""The canonical weight layout shared by every framework, its initializer and its file format.

Canonical means PyTorch's layout, float32: conv kernels OIHW, dense matrices (out, in), and the
400 inputs of fc1 in C,H,W flatten order. Backends convert to and from this layout; nothing else
crosses a framework boundary.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from common import spec
from common.files import atomic_write

Weights = dict[str, np.ndarray]
DTYPE = np.float32
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"  # an .npz is a zip archive of .npy files


class WeightsError(ValueError):
    """A weights file or dict that does not match the canonical layout."""


def init_weights(seed: int, variant: str = "classic") -> Weights:
    """Xavier-uniform (Glorot) kernels and zero biases, from a seeded NumPy generator.

    The bound is sqrt(6 / (fan_in + fan_out)), where a conv's fans include its receptive field
    (in*k*k, out*k*k), as in torch.nn.init.xavier_uniform_ and Keras's glorot_uniform.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in spec.param_shapes(variant).items():
        if name.endswith(".bias"):
            weights[name] = np.zeros(shape, DTYPE)
            continue
        receptive_field = int(np.prod(shape[2:]))
        fan_out, fan_in = shape[0] * receptive_field, shape[1] * receptive_field
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights[name] = rng.uniform(-bound, bound, size=shape).astype(DTYPE)
    return weights


def hwc_columns(matrix: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    """Reorder a dense matrix's input columns from the canonical C,H,W flatten order to H,W,C.

    A channels-last framework (Keras, Flax) flattens an N,H,W,C map in H,W,C order, so the same
    input lands in another column than after PyTorch's C,H,W flatten, and fc1's columns must move
    with it. Without this every shape still fits and the network silently computes something else.
    """
    c, h, w = chw
    return matrix.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(matrix.shape)


def chw_columns(matrix: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    """The inverse of hwc_columns: input columns in H,W,C order back to the canonical C,H,W."""
    c, h, w = chw
    return matrix.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(matrix.shape)


def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    """Canonical conv kernel (out, in, H, W) -> (H, W, in, out), the layout Keras and Flax convolve with.

    A transpose, not a reshape: reshaping would keep every number in place and pair each weight
    with the wrong pixel and channel, with no error.
    """
    return kernel.transpose(2, 3, 1, 0)


def hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)


def to_channels_last(weights: Weights, variant: str = "classic") -> Weights:
    """Canonical weights in the layout Keras and Flax hold, under the same names.

    Conv kernels become H,W,I,O; dense matrices become (in, out), because those frameworks compute
    x @ kernel where PyTorch computes x @ weight.T; and the dense layer after the flatten gets its
    columns in H,W,C order (hwc_columns). The same conversion serves gradients, which have their
    parameters' layout.
    """
    flattened = spec.flattened_inputs(variant)
    arrays = {}
    for layer in spec.param_layers(variant):
        weight = weights[f"{layer.name}.weight"]
        if layer.kind == "conv":
            kernel = oihw_to_hwio(weight)
        else:
            if layer.name in flattened:
                weight = hwc_columns(weight, flattened[layer.name])
            kernel = weight.T
        arrays[f"{layer.name}.weight"] = np.ascontiguousarray(kernel)
        arrays[f"{layer.name}.bias"] = np.array(weights[f"{layer.name}.bias"])
    return arrays


def from_channels_last(arrays: Weights, variant: str = "classic") -> Weights:
    """The inverse of to_channels_last: Keras/Flax-layout arrays back to canonical float32 weights."""
    flattened = spec.flattened_inputs(variant)
    weights = {}
    for layer in spec.param_layers(variant):
        kernel = np.asarray(arrays[f"{layer.name}.weight"])
        if layer.kind == "conv":
            weight = hwio_to_oihw(kernel)
        else:
            weight = kernel.T
            if layer.name in flattened:
                weight = chw_columns(weight, flattened[layer.name])
        weights[f"{layer.name}.weight"] = np.array(weight, DTYPE, order="C")
        weights[f"{layer.name}.bias"] = np.array(arrays[f"{layer.name}.bias"], DTYPE)
    return weights


def check_weights(weights: Weights, variant: str = "classic", source: str = "weights") -> Weights:
    """Return the weights as float32 arrays if names, shapes and dtypes are canonical; else raise."""
    expected = spec.param_shapes(variant)
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"{source}: tensor names do not match the canonical LeNet layout"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unexpected}" if unexpected else "")
            + f". Expected exactly {list(expected)}."
        )
    checked = {}
    for name, shape in expected.items():
        array = np.asarray(weights[name])
        if array.shape != shape:
            raise WeightsError(f"{source}: {name} has shape {array.shape}, expected {shape} (canonical OIHW / (out, in)).")
        if array.dtype != DTYPE:
            raise WeightsError(f"{source}: {name} has dtype {array.dtype}, expected float32.")
        checked[name] = array
    # Caught here, not an epoch later as a "diverged" loss that blames the learning rate.
    non_finite = [f"{name} holds {_count_non_finite(array)}" for name, array in checked.items() if not np.isfinite(array).all()]
    if non_finite:
        raise WeightsError(
            f"{source}: {'; '.join(non_finite)}. Weights must be finite: these come from a diverged run or a "
            "damaged file. Fix: start from the seed's weights or from the weights of a run that finished."
        )
    return checked


def _count_non_finite(array: np.ndarray) -> str:
    counts = [(int(np.isnan(array).sum()), "NaN"), (int(np.isinf(array).sum()), "inf")]
    total = sum(count for count, _ in counts)
    return " and ".join(f"{count} {kind}" for count, kind in counts if count) + (" value" if total == 1 else " values")


def save_weights(weights: Weights, path: str | os.PathLike, variant: str = "classic") -> Path:
    """Write canonical weights to an .npz file, atomically."""
    checked = check_weights(weights, variant)
    return atomic_write(path, lambda f: np.savez(f, **checked))


def load_weights(path: str | os.PathLike, variant: str = "classic") -> Weights:
    """Read and check a canonical .npz weights file; any problem is one WeightsError naming the file."""
    path = Path(path)
    fix = "Fix: give a file written by --save-weights (common.weights.save_weights), or start from a seed's weights."

    def fail(problem: str):
        raise WeightsError(f"{path}: {problem}. {fix}")

    if not os.path.exists(path):
        fail("no such weights file")
    if path.is_dir():
        fail("is a folder, not a weights file")
    try:
        with path.open("rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as err:
        fail(f"cannot be read ({err.strerror or err})")
    # np.load guesses the format from these same bytes: it would return an .npy file's bare array,
    # and refuse text with advice (allow_pickle=True) that would let a file run code.
    if not head:
        fail("is empty")
    if head == NPY_MAGIC:
        fail("holds a single .npy array, not the .npz archive of named tensors a weights file is")
    if not head.startswith(ZIP_MAGIC):
        fail("is not an .npz weights file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {name: npz[name] for name in npz.files}
    except ValueError:  # NumPy's text suggests allow_pickle=True, which is never the fix here
        fail("an array in it cannot be read: it is damaged or holds Python objects instead of numbers")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as err:
        fail(f"not a readable .npz weights file ({err}); it is damaged or of another format")
    return check_weights(weights, variant, source=str(path))

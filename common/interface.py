"""The contract every frameworks/<name>/__init__.py fulfils, and the training config they share.

A backend is a module, not a class: `frameworks.get_backend("jax")` returns the module, and the
same names mean the same thing in each. Backends translate common.spec and the canonical
weights (common.weights) into their framework, and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from common import spec
from common.data import FashionMNIST
from common.weights import Weights

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "gpu")
DEVICE_CHOICES = (*DEVICES, "auto")  # "auto": the GPU where the framework sees one, else the CPU
DEFAULT_LR = {"sgd": 0.1, "adam": 0.001}
MAX_SEED = 2**32 - 1  # the widest seed every framework's generator takes (TensorFlow's and MXNet's are 32-bit)
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "images_per_second")


class DeviceUnavailable(RuntimeError):
    """device="gpu" was asked for but the framework sees no GPU."""


def choose_device(device: str, available: Sequence[str]) -> str:
    """An interface device ("cpu" or "gpu") from a requested one, which may be "auto".

    Each backend's resolve_device calls this, then maps the answer to its framework's own device.
    """
    if device == "auto":
        return "gpu" if "gpu" in available else "cpu"
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    return device


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter spelled out, because framework defaults differ.

    sgd is plain SGD (no momentum, no weight decay). adam uses beta1, beta2 and eps: Keras's
    default eps is 1e-7 while PyTorch, optax and MXNet use 1e-8, so each backend passes eps.
    """

    variant: str = "classic"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = DEFAULT_LR["sgd"]
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        problems = []
        if self.variant not in spec.VARIANTS:
            problems.append(f"variant must be one of {spec.VARIANTS}, got {self.variant!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.device not in DEVICE_CHOICES:
            problems.append(f"device must be one of {DEVICE_CHOICES}, got {self.device!r}")
        for field in ("epochs", "batch_size"):
            if not (isinstance(getattr(self, field), int) and getattr(self, field) >= 1):
                problems.append(f"{field} must be a whole number >= 1, got {getattr(self, field)!r}")
        if not 0 < self.lr < math.inf:  # also refuses NaN
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            problems.append(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


class LayerRow(NamedTuple):
    """One line of a shape summary, measured on the real model."""

    name: str
    kind: str
    shape: tuple[int, ...]  # per example, canonical C,H,W order
    native_shape: tuple[int, ...]  # per example, as the framework holds it (e.g. H,W,C)
    params: int


class Trainer(Protocol):
    """One optimizer and the training data placed where the framework wants them.

    step() queues one update and returns the batch's mean loss as a framework scalar, without
    waiting for it (float() on it waits). epoch_totals() waits once, returns the epoch's summed
    loss and number of correct predictions, and resets them. sync_model() makes the model hold the
    trainer's current weights; backends whose trainer updates the model in place keep this no-op.
    """

    def step(self, batch_indices: np.ndarray) -> Any: ...

    def epoch_totals(self) -> tuple[float, int]: ...

    def sync_model(self) -> None:
        return None


@runtime_checkable
class Backend(Protocol):
    """What frameworks/<name>/__init__.py exports. evaluate, make_trainer and train are usually the
    shared defaults of common.training.default_functions, built from the backend's forward and Trainer."""

    name: str
    data_format: str  # "NCHW" or "NHWC": the layout the framework convolves in

    def version(self) -> str: ...

    def devices(self) -> list[str]:
        """The interface devices usable here: always "cpu", "gpu" when the framework sees one."""

    def resolve_device(self, device: str) -> Any:
        """The framework's own device for "cpu", "gpu" or "auto"; DeviceUnavailable for a GPU it lacks."""

    def build(self, variant: str = "classic", device: str = "cpu") -> Any: ...

    def model_device(self, model) -> Any:
        """The framework's device that holds the model's parameters."""

    def layer_summary(self, model) -> list[LayerRow]: ...

    def param_count(self, model) -> int: ...

    def get_weights(self, model) -> Weights: ...

    def set_weights(self, model, weights: Weights) -> None: ...

    def forward(self, model, x: np.ndarray) -> np.ndarray:
        """Logits as NumPy for canonical NCHW float32 x in [0, 1] (eval mode)."""

    def cross_entropy(self, logits, labels) -> Any:
        """Mean softmax cross-entropy of a batch of logits, in the framework's own tensors."""

    def loss_and_grads(self, model, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Mean cross-entropy and its gradients in the canonical layout (eval mode)."""

    def make_optimizer(self, model, config: TrainConfig) -> Any:
        """The framework's optimizer for model's parameters, every hyperparameter taken from config."""

    def evaluate(self, model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over canonical NCHW float32 x."""

    def make_trainer(self, model, data: FashionMNIST, config: TrainConfig) -> Trainer: ...

    def train(
        self,
        model,
        data: FashionMNIST,
        config: TrainConfig,
        on_epoch: Callable[[dict], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[dict]: ...


API = tuple(name for name in Backend.__annotations__) + tuple(
    name for name in vars(Backend) if not name.startswith("_") and callable(getattr(Backend, name))
)


def missing_names(module, api: Sequence[str] = API) -> list[str]:
    """The names of a contract (by default the backend's, API) that a module does not define."""
    return [name for name in api if not hasattr(module, name)]


def canonical_shape(native_shape: Sequence[int], data_format: str) -> tuple[int, ...]:
    """Per-example shape in C,H,W order, from a framework's own per-example shape."""
    shape = tuple(int(d) for d in native_shape)
    if data_format == "NHWC" and len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return shape


def shape_mismatches(rows: Iterable[LayerRow], variant: str) -> list[str]:
    """Where a measured summary's layer names or canonical shapes differ from the spec."""
    rows = list(rows)
    expected = spec.layers(variant)
    problems = []
    if [r.name for r in rows] != [layer.name for layer in expected]:
        problems.append(f"layer names {[r.name for r in rows]} != {[layer.name for layer in expected]}")
    problems += [
        f"{row.name}: shape {tuple(row.shape)} != {layer.output_shape}"
        for row, layer in zip(rows, expected)
        if tuple(row.shape) != layer.output_shape
    ]
    return problems


def param_mismatches(rows: Iterable[LayerRow], variant: str) -> list[str]:
    """Where a measured summary's per-layer parameter counts differ from the spec."""
    return [
        f"{row.name}: {row.params} parameters != {layer.param_count}"
        for row, layer in zip(rows, spec.layers(variant))
        if row.params != layer.param_count
    ]

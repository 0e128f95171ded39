"""The backends. Each is a module with the same names (see common.interface.Backend).

Import one at a time: frameworks fight inside one process (threads, GPU memory, import order),
which is why the comparison harness runs each in its own process.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from common.data_parallel import DISTRIBUTED_API
from common.interface import missing_names
from common.onnx_judge import EXPORT_API
from common.pitfalls import PITFALLS_API

BACKENDS = ("pytorch", "tensorflow", "jax", "mxnet")  # the four frameworks: a comparison's default
# The float64 NumPy oracle as a backend: the math itself, opt-in (slow, CPU only).
ALL_BACKENDS = (*BACKENDS, "numpy")


class BackendUnavailable(ImportError):
    """A backend whose framework cannot be imported here."""


def get_backend(name: str) -> ModuleType:
    """Import frameworks.<name> and check it provides the whole interface."""
    if name not in ALL_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ALL_BACKENDS)}")
    try:
        module = importlib.import_module(f"frameworks.{name}")
    except ImportError as err:
        raise BackendUnavailable(
            f"backend {name!r} cannot be imported ({err}). Install its tested versions with "
            f"`pip install -r requirements/{name}.txt`, or run it in its tox env: `tox -e {name}`."
        ) from err
    missing = missing_names(module)
    if missing:
        raise TypeError(f"frameworks.{name} does not implement {missing}")
    return module


# A backend's optional parts and their contracts: frameworks/<name>/distributed.py (its data-parallel
# engines), pitfalls.py (the mistakes a user of its framework makes, measured) and export.py (its
# own ONNX exporter).
PART_CONTRACTS = {"distributed": DISTRIBUTED_API, "pitfalls": PITFALLS_API, "export": EXPORT_API}


def get_part(name: str, part: str) -> ModuleType:
    """Import frameworks.<name>.<part> ("distributed", "pitfalls" or "export") and check it provides its contract."""
    if part not in PART_CONTRACTS:
        raise ValueError(f"unknown backend part {part!r}; choose from {', '.join(PART_CONTRACTS)}")
    get_backend(name)
    module = importlib.import_module(f"frameworks.{name}.{part}")
    missing = missing_names(module, PART_CONTRACTS[part])
    if missing:
        raise TypeError(f"frameworks.{name}.{part} does not implement {missing}")
    return module

"""common/ must import no deep-learning framework: it is what every backend shares."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import common

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "jaxlib", "flax", "optax", "mxnet")


def test_importing_all_of_common_loads_no_framework():
    modules = [f"common.{m.name}" for m in pkgutil.iter_modules(common.__path__)]
    assert "common.reference" in modules and "common.data" in modules
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(','.join(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
    )
    # A fresh interpreter: this test process may already hold a framework.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(common.__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"common/ imported {result.stdout.strip()}"

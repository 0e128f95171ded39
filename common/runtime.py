"""Process settings for fast training, applied by each backend's __init__ before it imports its framework.

Every process that loads a backend gets them (the comparison workers, the CLI, the tests, the
benchmark's trainer loop). The benchmark's tutorial-style loops opt out with LENET_TUNE_PROCESS=0,
to run with the defaults a reader's script has. Each setting was measured on the 2-core CPU
this suite is tuned on (README, "Speed").
"""

from __future__ import annotations

import ctypes
import os

# glibc's malloc hands every block over 128 KiB back to the OS when it is freed, so each training
# step's activations (2.4 MB for conv1's output) arrive as fresh pages that the kernel must fault
# in and zero, every step: slower epochs that vary from one process to the next (README, "Speed",
# has the measured figures). Serving such blocks from the heap and keeping freed memory for reuse
# avoids that. (The other frameworks pool their own buffers; it does them no harm.)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's ceiling for this setting on 64-bit
_TRIM_THRESHOLD_BYTES = 1 << 30

OPT_OUT = "LENET_TUNE_PROCESS"  # set to 0 for the frameworks' defaults


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_settings(framework: str) -> dict[str, str]:
    """Environment variables each framework's thread pools read once, when they start."""
    if framework == "pytorch":
        # Pin PyTorch's OpenMP threads, one per core: left to the scheduler, both sometimes ran on
        # one core for a whole process.
        return {"OMP_PROC_BIND": "true"}
    if framework == "mxnet":
        # MXNet's default engine hands each operator to a worker thread that runs it on one OpenMP
        # thread. The NaiveEngine runs operators in the calling thread, in order, so each can use
        # every core's OpenMP thread. (On a GPU build, whose kernels run asynchronously, set
        # MXNET_ENGINE_TYPE=ThreadedEnginePerDevice to keep them so.)
        return {"MXNET_ENGINE_TYPE": "NaiveEngine", "OMP_NUM_THREADS": str(cores())}
    return {}  # TensorFlow's and XLA's own thread pools already use every core


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks (see above); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def tune_process(framework: str) -> dict[str, str]:
    """Apply the settings for `framework` to this process; return the variables it set.

    A variable the user already set is left alone. Thread settings only take effect when they are
    set before the framework loads, which is why the backends call this first.
    """
    if os.environ.get(OPT_OUT) == "0":
        return {}
    applied = {name: value for name, value in thread_settings(framework).items() if name not in os.environ}
    os.environ.update(applied)
    keep_freed_memory()
    return applied

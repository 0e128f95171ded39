"""Process settings for fast training, chosen from this CPU and applied by each backend's __init__
before it imports its framework.

Every process that loads a backend gets them (the comparison workers, the CLI, the tests, the
benchmark's trainer loop). Opting out: LENET_TUNE_PROCESS=0 keeps every framework default (the
benchmark's "defaults" and tutorial loops run so, as a reader's script would);
LENET_TUNE_SKIP=NAME[,NAME] leaves out single settings (the benchmark measures each one so).
LENET_THREADS=N gives the process N threads (the comparison runs two frameworks at once, one
core each). What each setting is worth was measured with `python -m benchmarks.train_speed
--each-setting` (README, "Speed"); nothing here is one machine's tuning: every choice follows
from the CPU's flags and core count read at run time (common/cpu.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from common import cpu as cpu_facts

cores = cpu_facts.cores  # data_parallel and older callers import it from here
# The cores this process was given, read before any framework loads: PyTorch's OMP_PROC_BIND
# later binds the main thread to one core, after which the affinity mask says 1.
PROCESS_CORES = cores()

# TensorFlow's Linux x86 builds carry oneDNN but turn it on by default only on a CPU with one of
# these instruction sets for int8 and bfloat16 math (DefaultOneDnnPolicy in tensorflow/core/util/
# port.cc). An AVX2 CPU, or an AVX-512 one without VNNI, gets Eigen's slower kernels instead.
TF_ONEDNN_BY_DEFAULT = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

OPT_OUT = "LENET_TUNE_PROCESS"  # set to 0 for the frameworks' defaults
SKIP = "LENET_TUNE_SKIP"  # comma-separated Setting names to leave at the framework's default
THREADS = "LENET_THREADS"  # threads for this process; default: every core it may run on


@dataclass(frozen=True)
class Setting:
    name: str  # what LENET_TUNE_SKIP and the benchmark call it
    why: str  # one line: what the default does wrong here, and what the setting changes
    variables: dict[str, str] = field(default_factory=dict)  # environment read when the framework loads
    # What the benchmark's "trainer without NAME" run sets instead. Empty: nothing, the framework's
    # default. A setting whose default depends on the CPU is measured against its "off" spelled
    # out, so that the cost of the default shows on every CPU, not only where the default is off.
    off: dict[str, str] = field(default_factory=dict)


def threads_wanted(total_cores: int = PROCESS_CORES) -> int:
    """LENET_THREADS when set to a positive number, else every core this process was given."""
    value = os.environ.get(THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else total_cores


def settings(framework: str, cpu: cpu_facts.CPU | None = None, threads: int | None = None) -> list[Setting]:
    """The settings that make `framework` fastest on this CPU with `threads` threads."""
    cpu = cpu or cpu_facts.detect()
    threads = threads or threads_wanted(cpu.cores)
    isa = cpu_facts.vector_isa(cpu.flags)
    chosen = []
    if framework == "pytorch":
        chosen.append(Setting(
            "omp-proc-bind", "unpinned, PyTorch's OpenMP threads sometimes share one core for a whole run",
            {"OMP_PROC_BIND": "true"},
        ))
        if threads != cpu.cores:
            chosen.append(Setting("threads", f"{threads} of {cpu.cores} cores", {"OMP_NUM_THREADS": str(threads)}))
    elif framework == "tensorflow":
        if isa in ("avx2", "avx512f"):
            # oneDNN on, whatever TensorFlow would choose for this CPU (TF_ONEDNN_BY_DEFAULT above).
            own_choice = [flag for flag in TF_ONEDNN_BY_DEFAULT if flag in cpu.flags]
            why = (f"TensorFlow turns oneDNN on by itself here (this CPU has {', '.join(own_choice)}), but leaves it off on CPUs without VNNI, BF16 or AMX"
                   if own_choice else f"TensorFlow leaves oneDNN off on a CPU without VNNI, BF16 or AMX, as this one ({isa}): Eigen's kernels run instead")
            chosen.append(Setting("onednn", why, {"TF_ENABLE_ONEDNN_OPTS": "1"}, off={"TF_ENABLE_ONEDNN_OPTS": "0"}))
        if threads != cpu.cores:
            chosen.append(Setting(
                "threads", f"{threads} of {cpu.cores} cores",
                {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)},
            ))
    elif framework == "jax":
        if threads == 1:
            chosen.append(Setting(
                "threads", f"1 of {cpu.cores} cores: XLA's Eigen pool off",
                {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
            ))
    elif framework == "mxnet":
        # MXNet's default engine hands each operator to a worker thread that runs it on one OpenMP
        # thread. The NaiveEngine runs operators in the calling thread, in order, so each can use
        # every core's OpenMP thread. (On a GPU build, whose kernels run asynchronously, set
        # MXNET_ENGINE_TYPE=ThreadedEnginePerDevice to keep them so.)
        chosen.append(Setting(
            "naive-engine", "the threaded engine runs each operator on one OpenMP thread",
            {"MXNET_ENGINE_TYPE": "NaiveEngine", "OMP_NUM_THREADS": str(threads)},
        ))
    return chosen


def thread_settings(framework: str) -> dict[str, str]:
    """Every environment variable the settings for `framework` set on this machine."""
    return {name: value for setting in settings(framework) for name, value in setting.variables.items()}


ACTIVE: list[str] = []  # the Setting names tune_process applied in this process, for the worker's result


def tune_process(framework: str) -> dict[str, str]:
    """Apply the settings for `framework` to this process; return the variables it set.

    A variable the user already set is left alone. Thread settings only take effect when they are
    set before the framework loads, which is why the backends call this first.
    """
    if os.environ.get(OPT_OUT) == "0":
        return {}
    skipped = set(filter(None, os.environ.get(SKIP, "").split(",")))
    applied = {}
    for setting in settings(framework):
        if setting.name in skipped:
            continue
        ACTIVE.append(setting.name)
        applied.update({name: value for name, value in setting.variables.items() if name not in os.environ})
    os.environ.update(applied)
    return applied

"""What this CPU is, read at run time: vector extensions, cores, clock, and the fp32 peak they give.

The runtime settings (common/runtime.py) are chosen from these facts, and the speed tables
(benchmarks/train_speed.py, the report) give each framework's images/s as a share of the peak,
so nothing here is one machine's tuning. Linux only reads /proc/cpuinfo and sysfs; elsewhere
the flags are unknown and the peak is not given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz; absent on many VMs
FLOP_PER_IMAGE = 2.26e6  # one LeNet-5 training step (forward + backward + update) per image, fp32
FMA_UNITS = 2  # vector FMA pipes per core, as on current x86 server cores (Zen 2+, Skylake-SP+)


@dataclass(frozen=True)
class CPU:
    model: str
    flags: frozenset[str]
    cores: int  # the cores this process may run on (its affinity mask)
    ghz: float
    clock_source: str  # where `ghz` came from


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.M)
    return match.group(1).strip() if match else None


def detect(cpuinfo: str | None = None, max_freq_khz: str | None = None) -> CPU:
    """This machine's CPU (the arguments replace the files, for tests).

    The clock is the highest the kernel reports: cpufreq's cpuinfo_max_freq where sysfs has it,
    else the nominal clock in the model name ("@ 2.45GHz"), else /proc/cpuinfo's "cpu MHz"
    (the current clock, which a VM reports as its host's base clock).
    """
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    if max_freq_khz is None:
        max_freq_khz = MAX_FREQ.read_text() if MAX_FREQ.exists() else ""
    model = _field(cpuinfo, "model name") or "unknown"
    flags = frozenset((_field(cpuinfo, "flags") or "").split())
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", model)
    if max_freq_khz.strip():
        ghz, source = int(max_freq_khz) / 1e6, f"{MAX_FREQ}"
    elif nominal:
        ghz, source = float(nominal.group(1)), "the model name in /proc/cpuinfo"
    elif _field(cpuinfo, "cpu MHz"):
        ghz, source = float(_field(cpuinfo, "cpu MHz")) / 1000, "'cpu MHz' in /proc/cpuinfo"
    else:
        ghz, source = 0.0, "unknown"
    return CPU(model=model, flags=flags, cores=cores(), ghz=ghz, clock_source=source)


def vector_isa(flags: frozenset[str]) -> str:
    """The widest fp32 vector extension the CPU reports, as the frameworks' kernels choose theirs."""
    if "avx512f" in flags:
        return "avx512f"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return next((isa for isa in ("avx", "sse2") if isa in flags), "unknown")


def flops_per_cycle(flags: frozenset[str]) -> int:
    """fp32 FLOPs one core can retire per cycle: vector lanes x 2 (multiply and add) x FMA_UNITS.

    AVX-512: 16 lanes; AVX2 with FMA: 8. Without FMA (AVX, SSE: 8 and 4 lanes) a core has one
    add and one multiply pipe, 2 FLOPs per lane per cycle.
    """
    isa = vector_isa(flags)
    lanes = {"avx512f": 16, "avx2": 8, "avx": 8, "sse2": 4}.get(isa, 0)
    return lanes * 2 * (FMA_UNITS if isa in ("avx512f", "avx2") else 1)


def fp32_peak(cpu: CPU | None = None, threads: int | None = None) -> dict:
    """The fp32 peak of `threads` cores (default: all this process may use), and how it was computed."""
    cpu = cpu or detect()
    used = threads or cpu.cores
    per_cycle = flops_per_cycle(cpu.flags)
    gflops = used * cpu.ghz * per_cycle
    return dict(
        model=cpu.model, vector_isa=vector_isa(cpu.flags), cores=used, ghz=round(cpu.ghz, 3), clock_source=cpu.clock_source,
        flops_per_cycle=per_cycle, gflops=gflops,
        images_per_second=gflops * 1e9 / FLOP_PER_IMAGE if gflops else 0.0,
    )


def share_of_peak(images_per_second: float, peak: dict) -> float | None:
    """images/s as a fraction of what the peak would allow at FLOP_PER_IMAGE; None without a peak."""
    return images_per_second / peak["images_per_second"] if peak.get("images_per_second") else None

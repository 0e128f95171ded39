"""Training speed per framework: the suite's trainer against a tutorial-style loop, side by side.

    python -m benchmarks.train_speed [--frameworks pytorch jax] [--repeats 3] [--out results/bench]

Each (framework, loop) runs in its own process with the framework's tox env interpreter, on the
full training set, classic recipe, batch 128, float32. The trainer's process has the suite's
runtime settings (common/runtime.py); the tutorial's has the frameworks' defaults, as a reader's
script would. Runs are repeated, trainer and tutorial taking turns, and the table shows each
loop's fastest run (a shared VM's neighbours only ever slow a run down) and the slowest.
Prints a Markdown table and writes it, with the JSON, under --out. Figures only: nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from common.cli import positive_int
from common.files import write_json, write_text
from common.harness import REPO, interpreter
from common.runtime import OPT_OUT
from frameworks import BACKENDS

FLOP_PER_IMAGE = 2.26e6  # one LeNet training step (forward + backward) per image
FMA_UNITS = 2  # vector FMA pipes per core, as on current x86 server cores
LOOPS = ("trainer", "tutorial")


def cpu_peak_flops() -> dict:
    """fp32 peak = cores x clock x lanes x 2 (an FMA is two FLOPs) x FMA units."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M).group(1)) if "cpu MHz" in text else 0.0
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = len(re.findall(r"^processor\s*:", text, re.M)) or 1
    return dict(cores=cores, ghz=mhz / 1000, fp32_lanes=lanes, fma_units=FMA_UNITS, gflops=cores * mhz / 1000 * lanes * 2 * FMA_UNITS)


def run(framework: str, loop: str, out: Path) -> dict:
    result_path = out / f"{framework}-{loop}.json"
    env = dict(os.environ, **({OPT_OUT: "0"} if loop == "tutorial" else {}))
    process = subprocess.run(
        [interpreter(framework), "-m", "benchmarks.measure", framework, loop, str(result_path)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    if process.returncode != 0:
        return dict(framework=framework, loop=loop, error=process.stderr.strip().splitlines()[-1])
    return json.loads(result_path.read_text())


def fastest(runs: list[dict]) -> dict:
    """The fastest run's figures, every run's images/s and the largest peak memory; a failed run if none succeeded."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return runs[-1]
    best = max(done, key=lambda r: r["images_per_second"])
    return dict(best, runs=[r["images_per_second"] for r in done], peak_rss_mb=max(r["peak_rss_mb"] for r in done))


def table(results: list[dict], peak_gflops: float) -> str:
    lines = [
        "| framework | loop | images/s (fastest) | slowest run | s/epoch | warm-up s | peak RSS MB (largest) | % of fp32 peak | trainer / tutorial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["framework"], r["loop"]): r for r in results}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['framework']} | {r['loop']} | failed: {r['error']} | | | | | | |")
            continue
        tutorial = by_key.get((r["framework"], "tutorial"), {})
        ratio = r["images_per_second"] / tutorial["images_per_second"] if r["loop"] == "trainer" and "images_per_second" in tutorial else None
        lines.append(
            f"| {r['framework']} | {r['loop']} | {r['images_per_second']:,.0f} | {min(r['runs']):,.0f} "
            f"| {r['epoch_seconds']:.2f} | {r['warmup_seconds']:.2f} "
            f"| {r['peak_rss_mb']:,.0f} | {100 * r['images_per_second'] * FLOP_PER_IMAGE / (peak_gflops * 1e9):.1f} "
            f"| {f'{ratio:.2f}x' if ratio else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs per framework and loop")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    peak = cpu_peak_flops()
    runs = {(framework, loop): [] for framework in args.frameworks for loop in LOOPS}
    for _ in range(args.repeats):
        for (framework, loop), done in runs.items():
            done.append(run(framework, loop, args.out.resolve()))
    results = [fastest(done) for done in runs.values()]
    markdown = table(results, peak["gflops"])
    print(f"fp32 peak: {peak['gflops']:.0f} GFLOP/s ({peak})\n\n{markdown}")
    write_json(args.out / "train_speed.json", dict(peak=peak, results=results))
    write_text(args.out / "train_speed.md", markdown)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

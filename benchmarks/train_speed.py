"""Training speed per framework: the suite's trainer with its runtime settings, the same trainer with
the framework's defaults, and a tutorial-style loop, side by side.

    python -m benchmarks.train_speed [--frameworks pytorch jax] [--repeats 3] [--images 25600] [--each-setting]

Each (framework, loop) runs in its own process with the framework's tox env interpreter, classic
recipe, batch 128, float32:

- "trainer": the suite's Trainer with the settings common/runtime.py chooses for this CPU;
- "trainer, defaults": the same Trainer with every framework default (LENET_TUNE_PROCESS=0);
- "tutorial": the loop a d2l reader writes (benchmarks/tutorial/<name>.py), with the defaults;
- with --each-setting, "trainer without NAME": the trainer with one setting left at its default
  (LENET_TUNE_SKIP=NAME), or turned off where the default depends on the CPU (oneDNN), so each
  setting's worth is measured on its own.

Runs are repeated with the loops taking turns, each round starting one loop further along (A, B,
C; B, C, A; ...), so a neighbour's load and the position in the round fall on all of them alike,
and the table shows each loop's median run and its range, and each ratio round by round. The share
of the fp32 peak comes from the CPU's own flags, cores and clock (common/cpu.py). Prints a
Markdown table and writes it, with the JSON, under --out. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import cpu, runtime
from common.cli import positive_int, whole_number
from common.data import FILES
from common.files import write_json, write_text
from common.harness import REPO, interpreter
from frameworks import BACKENDS

TRAINER, DEFAULTS, TUTORIAL = "trainer", "trainer, defaults", "tutorial"
WITHOUT = "trainer without "
BENCH_IMAGES = 25600  # 200 steps of 128 after the 20 warm-up steps: long enough to settle, short enough to repeat


def training_images(text: str) -> int:
    """--images: one measured epoch over the first N training images, so at most the training set
    (checked here, before any process starts, rather than in every measuring process)."""
    return whole_number(text, 1, FILES["train_images"].count)


def loop_env(framework: str, loop: str) -> dict[str, str]:
    """The environment that makes a process run `loop`'s settings."""
    if loop in (DEFAULTS, TUTORIAL):
        return {runtime.OPT_OUT: "0"}
    if loop.startswith(WITHOUT):
        name = loop.removeprefix(WITHOUT)
        setting = next(setting for setting in runtime.settings(framework) if setting.name == name)
        return {runtime.SKIP: name, **setting.off}
    return {}


def left_out(setting: runtime.Setting) -> str:
    """How the "trainer without" run differs: the setting's variables unset, or spelled "off"."""

    def assignments(variables: dict[str, str]) -> str:
        return ", ".join(f"{name}={value}" for name, value in variables.items())

    if setting.off:
        return f"{setting.name}: {assignments(setting.off)} instead of {assignments(setting.variables)} ({setting.why})"
    return f"{setting.name}: {assignments(setting.variables)} left out ({setting.why})"


def loops(framework: str, each_setting: bool) -> list[str]:
    chosen = [TRAINER, DEFAULTS, TUTORIAL]
    if each_setting:
        chosen += [WITHOUT + setting.name for setting in runtime.settings(framework)]
    return chosen


def turn_order(framework_loops: list[str], round_number: int) -> list[str]:
    """The loops in turn, each round starting one further along: no loop always runs first after
    another framework's runs, or always right after the same neighbour."""
    shift = round_number % len(framework_loops)
    return framework_loops[shift:] + framework_loops[:shift]


def run(framework: str, loop: str, out: Path, images: int) -> dict:
    result_path = out / f"{framework}-{loop.replace(' ', '-').replace(',', '')}.json"
    # The tuning variables of the parent (if any) must not leak into a loop that should not have them.
    env = {k: v for k, v in os.environ.items() if k not in (runtime.OPT_OUT, runtime.SKIP)}
    env.update(loop_env(framework, loop))
    process = subprocess.run(
        [interpreter(framework), "-m", "benchmarks.measure", framework, TUTORIAL if loop == TUTORIAL else TRAINER, str(result_path), str(images)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    if process.returncode != 0:
        lines = process.stderr.strip().splitlines() or [f"exit code {process.returncode}"]
        return dict(framework=framework, loop=loop, error=lines[-1])
    return dict(json.loads(result_path.read_text()), loop=loop)


def median_run(runs: list[dict]) -> dict:
    """The median run's figures, every run's images/s and the largest peak memory; a failed run if none succeeded."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return runs[-1]
    ordered = sorted(done, key=lambda r: r["images_per_second"])
    middle = ordered[(len(ordered) - 1) // 2]
    return dict(
        middle, images_per_second=statistics.median(r["images_per_second"] for r in done), runs=[r["images_per_second"] for r in done],
        per_round=[r.get("images_per_second") for r in runs],  # None for a round whose run failed
        peak_rss_mb=max(r["peak_rss_mb"] for r in done),
    )


def ratio(run: dict, baseline: dict | None) -> str:
    """run's median images/s over baseline's, and in brackets the range of the same ratio taken
    round by round (each run against the baseline's run of its own round, since the loops take
    turns). A range that spans 1.00x says the difference is within this machine's noise."""
    if not baseline or "error" in baseline:
        return ""
    text = f"{run['images_per_second'] / baseline['images_per_second']:.2f}x"
    per_round = [a / b for a, b in zip(run["per_round"], baseline["per_round"]) if a and b]
    if len(per_round) > 1:
        text += f" ({min(per_round):.2f}-{max(per_round):.2f})"
    return text


def table(results: list[dict], peak: dict) -> str:
    lines = [
        "| framework | loop | images/s (median) | range | warm-up s | peak RSS MB | % of fp32 peak "
        "| vs. trainer with defaults (per round) | trainer vs. tutorial (per round) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["framework"], r["loop"]): r for r in results}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['framework']} | {r['loop']} | failed: {r['error']} | | | | | | |")
            continue
        over_defaults = ratio(r, by_key.get((r["framework"], DEFAULTS))) if r["loop"] != DEFAULTS else ""
        over_tutorial = ratio(r, by_key.get((r["framework"], TUTORIAL))) if r["loop"] == TRAINER else ""
        share = cpu.share_of_peak(r["images_per_second"], peak)
        lines.append(
            f"| {r['framework']} | {r['loop']} | {r['images_per_second']:,.0f} | {min(r['runs']):,.0f}-{max(r['runs']):,.0f} "
            f"| {r['warmup_seconds']:.2f} | {r['peak_rss_mb']:,.0f} | {'-' if share is None else f'{100 * share:.1f}'} | {over_defaults} | {over_tutorial} |"
        )
    return "\n".join(lines) + "\n"


def defaults_that_cost(results: list[dict]) -> dict[str, list[dict]]:
    """Per framework, what leaving the settings at the framework's defaults costs: all at once, then each one.

    summary.json's speed section and the report's "If you get it wrong" rows read this.
    """
    by_key = {(r["framework"], r["loop"]): r for r in results if "error" not in r}
    costs = {}
    for framework in dict.fromkeys(r["framework"] for r in results):
        tuned = by_key.get((framework, TRAINER))
        if not tuned:
            continue
        rows = []
        for loop, setting in [(DEFAULTS, "every framework default (LENET_TUNE_PROCESS=0)")] + [
            (WITHOUT + s.name, left_out(s)) for s in runtime.settings(framework)
        ]:
            if (framework, loop) in by_key:
                rows.append(dict(setting=setting, default_images_per_second=by_key[framework, loop]["images_per_second"],
                                 tuned_images_per_second=tuned["images_per_second"]))
        costs[framework] = rows
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs per framework and loop")
    parser.add_argument("--images", type=training_images, default=BENCH_IMAGES, help="training images per measured run, after the warm-up")
    parser.add_argument("--each-setting", action="store_true", help="also measure the trainer with each runtime setting left out")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    peak = cpu.fp32_peak()
    runs = {(framework, loop): [] for framework in args.frameworks for loop in loops(framework, args.each_setting)}
    for round_number in range(args.repeats):
        for framework in args.frameworks:
            for loop in turn_order(loops(framework, args.each_setting), round_number):
                runs[framework, loop].append(run(framework, loop, args.out.resolve(), args.images))
    results = [median_run(done) for done in runs.values()]
    markdown = table(results, peak)
    print(
        f"fp32 peak: {peak['gflops']:.0f} GFLOP/s = {peak['cores']} cores x {peak['ghz']} GHz ({peak['clock_source']}) "
        f"x {peak['flops_per_cycle']} FLOP/cycle ({peak['vector_isa']}); {peak['images_per_second']:,.0f} training images/s "
        f"at {cpu.FLOP_PER_IMAGE / 1e6} MFLOP each\n\n{markdown}"
    )
    write_json(args.out / "train_speed.json", dict(
        measured_at=time.strftime("%Y-%m-%d %H:%M"), cpu_model=peak["model"], peak=peak, images=args.images, results=results,
        defaults=defaults_that_cost(results),
    ))
    write_text(args.out / "train_speed.md", markdown)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The comparison harness: one process per framework, then the parity checks and the report.

Frameworks fight inside one process, so each runs `python -m frameworks.worker` in its own
interpreter (its tox env's when one exists). Workers write JSON and .npz files; this module
only reads them, judges them (common.parity) and reports (common.report).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import parity
from common.data import load_fashion_mnist, scale_images
from common.files import atomic_write, write_json
from common.report import REPO, write_report
from common.weights import init_weights, load_weights, save_weights

PROBE_SIZE = 64  # the fixed batch for forward and gradient checks: the first test images


@dataclass
class Options:
    frameworks: list[str]
    config: dict  # TrainConfig fields; device may also be "auto"
    seeds: list[int]
    out: Path
    train_subset: int | None = None
    test_subset: int | None = None
    data_dir: str | None = None
    force: bool = False
    steps: int = 50  # first SGD steps compared step by step
    modules: dict[str, str] = field(default_factory=dict)  # framework -> module path, for the harness's own tests


def interpreter(framework: str) -> str:
    """The framework's tox env interpreter when it exists, else this one."""
    candidate = REPO / ".tox" / framework / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def run_worker(framework: str, job: dict, options: Options, on_event) -> dict:
    """Run one worker process (or reuse its finished result) and return what it wrote."""
    out = Path(job["out"])
    result_path = out / f"{job['phase']}.json"
    job_path = out / f"{job['phase']}-job.json"
    if not options.force and result_path.exists() and job_path.exists():
        previous = json.loads(result_path.read_text())
        if previous.get("status") == "ok" and json.loads(job_path.read_text()) == job:
            on_event(dict(event="reused"))
            return previous
    result_path.unlink(missing_ok=True)
    write_json(job_path, job)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(out / f"{job['phase']}-stderr.log", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable if framework in options.modules else interpreter(framework), "-m", "frameworks.worker", str(job_path)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
        for line in process.stdout:
            try:
                on_event(json.loads(line))
            except json.JSONDecodeError:
                pass  # a framework's own chatter on stdout
        process.wait()
    if result_path.exists():
        return json.loads(result_path.read_text())
    tail = (out / f"{job['phase']}-stderr.log").read_text()[-2000:]
    return dict(framework=framework, status="failed", error=f"worker exited with code {process.returncode} and wrote no result:\n{tail}")


def environment(runs: dict) -> dict:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), cpu)
    return dict(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        frameworks={name: dict(version=r.get("version"), devices=r.get("devices"), device=r.get("device")) for name, r in runs.items()},
    )


class Display:
    """A rich progress bar per framework run, fed by the workers' JSON lines."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=console,
        )

    def handler(self, description: str):
        task = self.progress.add_task(description, total=None, status="starting")

        def on_event(event: dict) -> None:
            kind = event.get("event")
            if kind == "start":
                self.progress.update(task, total=event["epochs"], completed=0, status="training")
            elif kind == "batch":
                epoch = self.progress.tasks[task].completed
                self.progress.update(task, completed=int(epoch) + event["done"] / event["total"])
            elif kind == "epoch":
                self.progress.update(
                    task, completed=event["epoch"],
                    status=f"epoch {event['epoch']}: loss {event['train_loss']:.4f} acc {event['test_accuracy']:.4f}",
                )
            elif kind == "reused":
                self.progress.update(task, total=1, completed=1, status="done earlier, reused")

        return task, on_event

    def finish(self, task, result: dict) -> None:
        status = "ok" if result.get("status") == "ok" else f"[red]failed: {result.get('error', '')[:60]}"
        self.progress.update(task, status=status)
        self.progress.stop_task(task)  # freezes its clock: a task with no total would count on to the end


def run_comparison(options: Options, console: Console | None = None) -> dict:
    """Run every framework, check parity, write summary.json and the report; return the summary."""
    console = console or Console()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_fashion_mnist(options.data_dir, train_subset=options.train_subset, test_subset=options.test_subset)
    probe_x, probe_y = scale_images(data.test_images[:PROBE_SIZE]), data.test_labels[:PROBE_SIZE]
    probe_path = atomic_write(out / "probe.npz", lambda f: np.savez(f, x=probe_x, y=probe_y))
    base_job = dict(
        config=options.config, data_dir=options.data_dir, train_subset=options.train_subset,
        test_subset=options.test_subset, probe=str(probe_path),
    )
    display = Display(console)
    runs: dict[str, dict[int, dict]] = {name: {} for name in options.frameworks}
    with display.progress:
        for seed in options.seeds:
            initial = save_weights(init_weights(seed, options.config["variant"]), out / f"initial_weights_seed{seed}.npz")
            for name in options.frameworks:
                job = dict(
                    base_job, phase="run", framework=name, module=options.modules.get(name),
                    config={**options.config, "seed": seed}, initial_weights=str(initial),
                    steps=options.steps if seed == options.seeds[0] else 0, out=str(out / name / f"seed{seed}"),
                )
                task, on_event = display.handler(f"{name} seed {seed}")
                runs[name][seed] = run_worker(name, job, options, on_event)
                display.finish(task, runs[name][seed])
        first = options.seeds[0]
        trained = {
            name: str(out / name / f"seed{first}" / "trained_weights.npz")
            for name in options.frameworks
            if runs[name][first]["status"] == "ok"
        }
        cross = {}
        for name in trained:
            job = dict(
                base_job, phase="crosseval", framework=name, module=options.modules.get(name),
                config={**options.config, "seed": first}, weights=trained, out=str(out / name / f"seed{first}"),
            )
            task, on_event = display.handler(f"{name} cross-eval")
            cross[name] = run_worker(name, job, options, on_event)
            display.finish(task, cross[name])
    summary = summarize(options, runs, cross, probe_x, probe_y, out)
    summary["seconds"] = time.perf_counter() - started
    write_json(out / "summary.json", summary)
    write_report(summary, out)
    console.print(final_table(summary))
    return summary


def summarize(options: Options, runs: dict, cross: dict, probe_x, probe_y, out: Path) -> dict:
    first = options.seeds[0]
    variant = options.config["variant"]
    checks = []
    frameworks = {}
    for name, by_seed in runs.items():
        result = by_seed[first]
        failed = [r for r in by_seed.values() if r["status"] != "ok"]
        entry = dict(status="failed" if failed else "ok", version=result.get("version"), device=result.get("device"))
        if failed:
            entry["error"] = failed[0].get("error", "unknown error")
        if result["status"] == "ok":
            entry.update(
                params=result["params"], layers=result["layers"], history=result["history"],
                final_test_accuracy=result["final_test_accuracy"], seconds=result["seconds"],
                seed_accuracies={str(s): r["final_test_accuracy"] for s, r in by_seed.items() if r["status"] == "ok"},
            )
            initial = load_weights(out / f"initial_weights_seed{first}.npz")
            with np.load(out / name / f"seed{first}" / "probe_results.npz") as probe_results:
                checks += parity.structure_checks(name, result, variant)
                checks += parity.probe_checks(name, dict(probe_results), result["probe_loss"], initial, probe_x, probe_y, variant)
        frameworks[name] = entry
    # Exact agreement is expected only without dropout (its masks differ between frameworks) and with
    # plain SGD (Keras and MXNet add Adam's eps before the bias correction, PyTorch and optax after).
    deterministic = variant == "classic" and options.config["optimizer"] == "sgd"
    for seed in options.seeds:
        finished = {name: runs[name][seed] for name in runs if runs[name][seed]["status"] == "ok"}
        for item in parity.training_checks(finished, deterministic):
            if len(options.seeds) > 1:
                item["check"] += f" (seed {seed})"
            checks.append(item)
    matrix = {name: r["accuracy"] for name, r in cross.items() if r["status"] == "ok"}
    checks += parity.cross_eval_checks(matrix)
    stats = {}
    if not deterministic or len(options.seeds) > 1:
        stats = parity.seed_statistics(
            {name: [r["final_test_accuracy"] for r in runs[name].values()] for name in runs if frameworks[name]["status"] == "ok"}
        )
        checks += parity.seed_overlap_check(stats)
    return dict(
        config=dict(options.config, seeds=options.seeds, train_subset=options.train_subset, test_subset=options.test_subset),
        environment=environment({name: by_seed[first] for name, by_seed in runs.items()}),
        frameworks=frameworks,
        parity=checks,
        cross_eval=matrix,
        seed_statistics=stats,
    )


def final_table(summary: dict) -> Table:
    table = Table(title=f"LeNet-5 parity: {'PASS' if parity.passed(summary) else 'FAIL'}")
    for column in ("framework", "status", "params", "final test acc", "s/epoch", "images/s"):
        table.add_column(column)
    for name, entry in summary["frameworks"].items():
        if entry["status"] != "ok":
            table.add_row(name, f"[red]failed[/red]: {entry['error'][:80]}", "", "", "", "")
            continue
        history = entry["history"]
        table.add_row(
            name, "ok", f"{entry['params']:,}", f"{entry['final_test_accuracy']:.4f}",
            f"{np.mean([e['seconds'] for e in history]):.2f}", f"{np.mean([e['images_per_second'] for e in history]):,.0f}",
        )
    failed = [c for c in summary["parity"] if not c["ok"]]
    table.caption = f"{len(summary['parity']) - len(failed)}/{len(summary['parity'])} parity checks passed" + (
        "; failed: " + ", ".join(f"{c['check']} {c['frameworks']}" for c in failed) if failed else ""
    )
    return table

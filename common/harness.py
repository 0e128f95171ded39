"""The comparison harness: one process per framework, then the parity checks and the report.

Frameworks fight inside one process, so each runs `python -m frameworks.worker` in its own
interpreter (its tox env's when one exists). Workers write JSON and .npz files (common/protocol.py);
this module only reads them, judges them (common.parity) and reports (common.report).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import cpu, onnx_judge, parity, pitfalls, protocol, runtime
from common.data import load_fashion_mnist, scale_images
from common.files import atomic_write, folder_lock, write_json
from common.interface import TrainConfig
from common.protocol import Job
from common.report import REPO, write_report
from common.weights import WeightsError, init_weights, load_weights, save_weights

BENCH_RESULT = REPO / "results" / "bench" / "train_speed.json"  # what `tox -e bench` wrote last
WORKER_GRACE_S = 10  # after Ctrl-C, how long a worker may take to write its partial result


@dataclass
class Options:
    frameworks: list[str]
    config: TrainConfig  # the recipe; its seed is replaced by each of `seeds`, its device may be "auto"
    seeds: list[int]
    out: Path
    train_subset: int | None = None
    test_subset: int | None = None
    data_dir: str | None = None
    force: bool = False
    steps: int = 50  # first SGD steps compared step by step
    replicas: list[int] = field(default_factory=list)  # data-parallel runs, each against the 1-replica run
    pythons: dict[str, str] = field(default_factory=dict)  # framework -> interpreter, instead of its tox env's
    pitfalls: bool = False  # also measure what each mishandled difference costs (frameworks/<name>/pitfalls.py)
    lanes: int | None = None  # frameworks trained at once, each on its own cores; None: lanes_for(this machine)


def lanes_for(jobs: int, machine_cores: int) -> int:
    """How many framework runs share the machine at once: one per core, up to the number of runs.

    LeNet's layers are too small to keep two cores busy within one step (a step's threads wait on
    each other at every layer), so two frameworks on one core each finish sooner than the same
    two in turn on both cores (README, "Speed", has the measurement).
    """
    return max(1, min(jobs, machine_cores))


def core_sets(lanes: int) -> list[set[int]]:
    """This process's cores split into `lanes` disjoint sets, one per lane."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per_lane = max(1, len(available) // lanes)
    return [set(available[i * per_lane : (i + 1) * per_lane]) or set(available) for i in range(lanes)]


def interpreter(framework: str, pythons: dict[str, str] | None = None) -> str:
    """The interpreter asked for, else the framework's tox env interpreter when it exists, else this one."""
    if pythons and framework in pythons:
        return pythons[framework]
    candidate = REPO / ".tox" / framework / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def reusable(job: Job, options: Options) -> dict | None:
    """An earlier run's result for exactly this job, if it finished and every file it wrote is still sound."""
    if options.force:
        return None
    try:
        previous = json.loads(protocol.result_path(job.out, job.phase).read_text())
        if previous.get("status") != "ok" or Job.load(protocol.job_path(job.out, job.phase)) != job:
            return None
        if job.phase == "run":
            load_weights(Path(job.out) / protocol.TRAINED_WEIGHTS)
            with np.load(Path(job.out) / protocol.PROBE_RESULTS) as probe_results:
                probe_results.files  # noqa: B018 - opening the archive checks it
        elif job.phase == "data_parallel":
            load_weights(previous["weights"])
        if job.onnx and previous.get("onnx", {}).get("status") == "ok":
            Path(job.onnx).stat()  # the export the judge will read is still there
    except (OSError, ValueError, KeyError, TypeError, WeightsError):  # missing, damaged or from another version
        return None
    return previous


class Worker:
    """One worker process; the harness keeps a handle so Ctrl-C can end it."""

    def __init__(self, job: Job, options: Options, cores: set[int] | None = None):
        self.job, self.options, self.process, self.cores = job, options, None, cores

    def run(self, on_event) -> dict:
        job = self.job
        protocol.result_path(job.out, job.phase).unlink(missing_ok=True)
        job_file = job.save()
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        if self.cores:  # a lane of its own: the framework's thread pools are sized to it (common/runtime.py)
            env.setdefault(runtime.THREADS, str(len(self.cores)))
        with open(protocol.stderr_path(job.out, job.phase), "w") as stderr:
            self.process = subprocess.Popen(
                [interpreter(job.framework, self.options.pythons), "-m", "frameworks.worker", str(job_file)],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
            if self.cores:  # before the interpreter has started any thread; the ones it starts inherit it
                os.sched_setaffinity(self.process.pid, self.cores)
            for line in self.process.stdout:
                event = protocol.parse_event(line)
                if event:
                    on_event(event)
            self.process.wait()
        return self.read_result()

    def read_result(self) -> dict:
        job = self.job
        try:
            return json.loads(protocol.result_path(job.out, job.phase).read_text())
        except (OSError, ValueError):
            tail = protocol.stderr_path(job.out, job.phase).read_text(errors="replace")[-2000:]
            code = self.process.returncode if self.process else None
            return dict(framework=job.framework, status="failed", error=f"worker exited with code {code} and wrote no result:\n{tail}")

    def stop(self) -> None:
        """After Ctrl-C: the worker got the same SIGINT; give it a moment to write, then end it by its pid."""
        if self.process and self.process.poll() is None:
            try:
                self.process.wait(WORKER_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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

        return task, on_event

    def finish(self, task, result: dict, reused: bool = False) -> None:
        if reused:
            status = "done earlier, reused"
            self.progress.update(task, total=1, completed=1)
        elif result.get("status") == "ok":
            status = "ok"
        else:
            status = f"[red]failed: {result.get('error', '')[:60]}"
        self.progress.update(task, status=status)
        self.progress.stop_task(task)  # freezes its clock: a task with no total would count on to the end


class Comparison:
    """One comparison into one folder: the workers it runs and what they returned, in order."""

    def __init__(self, options: Options, display: Display):
        self.options, self.display = options, display
        self.results: dict[str, dict] = {}  # a label per job ("pytorch seed 0") -> its result
        self.reused_seconds = 0.0
        self.current: list[Worker] = []  # the workers running now, for Ctrl-C
        self.pool: ThreadPoolExecutor | None = None

    def run(self, label: str, job: Job, cores: set[int] | None = None) -> dict:
        task, on_event = self.display.handler(label)
        previous = reusable(job, self.options)
        if previous is not None:
            self.reused_seconds += previous.get("seconds", 0.0)
            self.display.finish(task, previous, reused=True)
            self.results[label] = previous
            return previous
        worker = Worker(job, self.options, cores)
        self.current.append(worker)
        result = worker.run(on_event)
        self.current.remove(worker)
        self.display.finish(task, result)
        self.results[label] = result
        return result

    def run_at_once(self, jobs: dict[str, Job]) -> None:
        """Run these jobs in lanes (Options.lanes), each lane on its own cores, the next job taking the first free lane."""
        lanes = self.options.lanes or lanes_for(len(jobs), cpu.cores())
        if lanes == 1:
            for label, job in jobs.items():
                self.run(label, job)
            return
        free = core_sets(lanes)

        def in_a_lane(label: str, job: Job) -> None:
            cores = free.pop()  # the pool runs at most `lanes` of these at once, so one set is always free
            try:
                self.run(label, job, cores)
            finally:
                free.append(cores)

        self.pool = ThreadPoolExecutor(lanes)
        try:
            for future in [self.pool.submit(in_a_lane, label, job) for label, job in jobs.items()]:
                future.result()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)  # after Ctrl-C: start nothing more

    def stop(self) -> None:
        """After Ctrl-C: no more jobs start, and every running worker writes its partial result or is ended."""
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for worker in list(self.current):
            worker.stop()
        if self.pool:
            self.pool.shutdown(wait=True)  # the lanes record what their workers wrote before the summary reads it


def run_comparison(options: Options, console: Console | None = None) -> dict:
    """Run every framework, check parity, write summary.json and the report; return the summary.

    The folder is locked for the whole run, so a second comparison into it stops at once. On
    Ctrl-C the running worker is ended, and the summary and report are written from what finished,
    marked partial; then KeyboardInterrupt goes on to the caller.
    """
    console = console or Console()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        started = time.perf_counter()
        # Every file is read and verified once here, so bad data stops the run before any worker starts.
        data = load_fashion_mnist(options.data_dir, train_subset=options.train_subset, test_subset=options.test_subset)
        probe_x, probe_y = scale_images(data.test_images[:parity.PROBE_SIZE]), data.test_labels[:parity.PROBE_SIZE]
        probe_path = atomic_write(out / "probe.npz", lambda f: np.savez(f, x=probe_x, y=probe_y))
        comparison = Comparison(options, Display(console))
        interrupted = False
        with comparison.display.progress:
            try:
                run_all_phases(options, comparison, str(probe_path))
            except KeyboardInterrupt:
                interrupted = True
                comparison.stop()
        test = scale_images(data.test_images), data.test_labels  # the ONNX exports' accuracy in onnxruntime
        summary = summarize(options, comparison.results, probe_x, probe_y, out, test)
        summary.update(
            partial=interrupted, seconds=time.perf_counter() - started, reused_seconds=comparison.reused_seconds,
            data_source=data.source,
        )
        write_json(out / "summary.json", summary)
        write_report(summary, out)
    console.print(final_table(summary))
    if interrupted:
        raise KeyboardInterrupt
    return summary


def run_label(name: str, seed: int) -> str:
    return f"{name} seed {seed}"


def replicas_label(name: str, replicas: int) -> str:
    return f"{name} x{replicas} replicas"


def pitfalls_label(name: str) -> str:
    return f"{name} pitfalls"


def with_pitfalls(frameworks: list[str]) -> list[str]:
    """The frameworks that have mistakes to measure (the numpy oracle has no framework to mishandle)."""
    return [name for name in frameworks if name in pitfalls.FRAMEWORKS_WITH_PITFALLS]


def with_exporter(frameworks: list[str]) -> list[str]:
    """The frameworks with an ONNX exporter (frameworks/<name>/export.py; the numpy oracle has none)."""
    return [name for name in frameworks if name in onnx_judge.FRAMEWORKS_WITH_EXPORTER]


def run_all_phases(options: Options, comparison: Comparison, probe_path: str) -> None:
    out, first = Path(options.out), options.seeds[0]
    shared = dict(data_dir=options.data_dir, train_subset=options.train_subset, test_subset=options.test_subset)
    initial = {}
    runs = {}
    for seed in options.seeds:
        initial[seed] = str(save_weights(init_weights(seed, options.config.variant), out / f"initial_weights_seed{seed}.npz"))
        for name in options.frameworks:
            runs[run_label(name, seed)] = Job(
                phase="run", framework=name, config=replace(options.config, seed=seed), out=str(out / name / f"seed{seed}"),
                probe=probe_path, initial_weights=initial[seed], steps=options.steps if seed == first else 0, **shared,
                onnx=str(out / name / protocol.ONNX_MODEL) if seed == first and name in with_exporter(options.frameworks) else None,
            )
    comparison.run_at_once(runs)
    trained = {
        name: str(out / name / f"seed{first}" / protocol.TRAINED_WEIGHTS)
        for name in options.frameworks
        if comparison.results[run_label(name, first)]["status"] == "ok"
    }
    for name in options.frameworks:
        for replicas in options.replicas:
            job = Job(
                phase="data_parallel", framework=name, config=replace(options.config, seed=first),
                out=str(out / name / f"replicas{replicas}"), initial_weights=initial[first], steps=options.steps,
                replicas=replicas, **shared,
            )
            result = comparison.run(replicas_label(name, replicas), job)
            if result["status"] == "ok":
                trained[replicas_label(name, replicas)] = result["weights"]
    comparison.run_at_once({
        f"{name} cross-eval": Job(
            phase="crosseval", framework=name, config=replace(options.config, seed=first),
            out=str(out / name / f"seed{first}"), weights=trained, **shared,
        )
        for name in options.frameworks
        if name in trained
    })
    if options.pitfalls:
        for name in with_pitfalls(options.frameworks):
            run = comparison.results[run_label(name, first)]
            finished = run["status"] == "ok"
            job = Job(
                phase="pitfalls", framework=name, config=replace(options.config, seed=first), out=str(out / name / "pitfalls"),
                initial_weights=initial[first], steps=options.steps, weights={"trained": trained[name]} if finished else {},
                history=run["history"] if finished else None, **shared,
            )
            comparison.run(pitfalls_label(name), job)


def summarize(options: Options, results: dict[str, dict], probe_x, probe_y, out: Path, test=None) -> dict:
    first = options.seeds[0]
    variant = options.config.variant
    not_run = dict(status="failed", error="not run: the comparison was interrupted first")
    runs = {name: {seed: results.get(run_label(name, seed), not_run) for seed in options.seeds} for name in options.frameworks}
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
                params=result["params"], layers=result["layers"], history=result["history"], step_losses=result["step_losses"],
                final_test_accuracy=result["final_test_accuracy"], seconds=result["seconds"], speed=result.get("speed"),
                seed_accuracies={str(s): r["final_test_accuracy"] for s, r in by_seed.items() if r["status"] == "ok"},
            )
            initial = load_weights(out / f"initial_weights_seed{first}.npz")
            with np.load(out / name / f"seed{first}" / protocol.PROBE_RESULTS) as probe_results:
                checks += parity.structure_checks(name, result, variant)
                checks += parity.probe_checks(name, dict(probe_results), result["probe_loss"], initial, probe_x, probe_y, variant)
        frameworks[name] = entry
    # Exact agreement is expected only without dropout (its masks differ between frameworks) and with
    # plain SGD (Keras and MXNet add Adam's eps before the bias correction, PyTorch and optax after).
    deterministic = variant == "classic" and options.config.optimizer == "sgd"
    for seed in options.seeds:
        finished = {name: runs[name][seed] for name in runs if runs[name][seed]["status"] == "ok"}
        for item in parity.training_checks(finished, deterministic):
            if len(options.seeds) > 1:
                item["check"] += f" (seed {seed})"
            checks.append(item)
    data_parallel = {}
    for name in options.frameworks:
        for replicas in options.replicas:
            result = results.get(replicas_label(name, replicas), not_run)
            entry = {key: value for key, value in result.items() if key not in ("traceback", "framework", "phase")}
            data_parallel.setdefault(name, {})[str(replicas)] = entry
            if result["status"] == "ok" and runs[name][first]["status"] == "ok":
                checks += parity.replica_checks(name, replicas, result, runs[name][first], deterministic)
    matrix = {
        name: results[f"{name} cross-eval"]["accuracy"]
        for name in options.frameworks
        if results.get(f"{name} cross-eval", {}).get("status") == "ok"
    }
    checks += parity.cross_eval_checks(matrix)
    exports = judge_exports(options, runs, probe_x, test, out)
    checks += onnx_judge.onnx_checks(exports)
    runtime_row = {name: entry["accuracy"] for name, entry in exports.items() if entry.get("status") == "ok"}
    if runtime_row:  # after the cross-eval checks: onnx_checks compares each file with its own framework
        matrix[onnx_judge.RUNTIME] = runtime_row
    stats = {}
    if not deterministic or len(options.seeds) > 1:
        stats = parity.seed_statistics(
            {name: [r["final_test_accuracy"] for r in runs[name].values()] for name in runs if frameworks[name]["status"] == "ok"}
        )
        checks += parity.seed_overlap_check(stats)
    records, pitfall_runs = [], {}
    if options.pitfalls:
        for name in with_pitfalls(options.frameworks):
            result = results.get(pitfalls_label(name), not_run)
            pitfall_runs[name] = dict(status=result["status"], error=result.get("error"), seconds=result.get("seconds"))
            records += result.get("pitfalls", [])
        across = pitfalls.batch_order_spread(records)
        records = [pitfalls.summary_record(r) for r in records] + ([across] if across else [])
    return dict(
        config=dict(options.config.to_dict(), seeds=options.seeds, train_subset=options.train_subset, test_subset=options.test_subset),
        environment=environment({name: by_seed[first] for name, by_seed in runs.items()}),
        frameworks=frameworks,
        parity=checks,
        cross_eval=matrix,
        seed_statistics=stats,
        data_parallel=data_parallel,
        pitfalls=records,
        pitfall_runs=pitfall_runs,
        speed=speed_summary(frameworks),
        onnx=exports,
    )


def speed_summary(frameworks: dict) -> dict:
    """summary["speed"]: this machine's fp32 peak and each framework's share of it in this run; and,
    when `tox -e bench` last ran on this CPU, what each framework's defaults cost (labelled as its figures)."""
    peak = cpu.fp32_peak()
    rows = {}
    for name, entry in frameworks.items():
        speed = entry.get("speed") or {}
        if speed.get("train_images_per_second"):
            lane_peak = speed.get("fp32_peak") or peak  # a framework run in a lane has that lane's cores
            rows[name] = dict(
                threads=speed.get("threads"), settings=speed.get("settings", []),
                train_images_per_second=speed["train_images_per_second"], eval_images_per_second=speed.get("eval_images_per_second"),
                share_of_peak=cpu.share_of_peak(speed["train_images_per_second"], lane_peak),
            )
    result = dict(peak=peak, frameworks=rows)
    try:
        bench = json.loads(BENCH_RESULT.read_text())
    except (OSError, ValueError):
        return result
    if bench.get("cpu_model") == peak["model"] and bench.get("defaults"):
        result["defaults"] = bench["defaults"]
        result["defaults_source"] = (
            f"tox -e bench, {bench.get('measured_at')}, {bench.get('images')} training images per run, median of the runs "
            f"({BENCH_RESULT.relative_to(REPO)})"
        )
    return result


def judge_exports(options: Options, runs: dict, probe_x, test, out: Path) -> dict[str, dict]:
    """Each finished framework's ONNX export, run by onnxruntime (common/onnx_judge.py)."""
    first, exports = options.seeds[0], {}
    for name in with_exporter(options.frameworks):
        result = runs[name][first]
        if result["status"] != "ok" or test is None:
            continue
        export = result.get("onnx") or dict(status="failed", error="the run recorded no ONNX export (a run from before exports: rerun with --force)")
        weights = load_weights(out / name / f"seed{first}" / protocol.TRAINED_WEIGHTS)
        exports[name] = onnx_judge.judge(export, weights, probe_x, *test, options.config.variant, result["final_test_accuracy"])
    return exports


def final_table(summary: dict) -> Table:
    verdict = "PARTIAL" if summary.get("partial") else ("PASS" if parity.passed(summary) else "FAIL")
    table = Table(title=f"LeNet-5 parity: {verdict}")
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

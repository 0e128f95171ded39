"""Data-parallel training: what every framework shares, and none of the reduction itself.

Each framework's own engine reduces the gradients (DDP, tf.distribute, a sharded jax.jit,
MXNet's kvstore); this module only decides how a global batch is split between replicas,
launches replica processes on this machine with a time limit, runs the replica's training with
the common batch order, and collects what the replicas wrote.

The mean over a global batch of B examples split into shards of sizes b_1..b_N is
sum_r (sum of shard r's losses) / B. The tempting "each replica takes its shard's mean, then the
engine averages the N means" weighs every shard equally, so when B is not a multiple of N (128
over 3 replicas, or the last batch of 96 over 5) examples in smaller shards count for more. Every
engine here scales each replica's loss so that the engine's own reduction yields the global mean.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.data import load_fashion_mnist
from common.files import write_json
from common.interface import TrainConfig
from common.runtime import cores
from common.training import fit, step_losses
from common.weights import load_weights, save_weights

# Bounds every collective and every stall: a replica that dies leaves the others waiting in an
# all-reduce, so each engine passes this to its own timeout setting, and the launcher ends the
# processes once no replica has made progress (a training step, see Heartbeat) for this long.
# A long run is not a stall: ten full epochs take far longer than this.
COLLECTIVE_TIMEOUT_S = 120
# The launcher waits this much longer than a collective may, so that a hung peer is reported by
# the engine's own timeout error (which names it) rather than by the launcher's deadline.
START_UP_MARGIN_S = 60
HEARTBEAT_INTERVAL_S = 1.0
STOP_GRACE_S = 5  # after SIGTERM, how long a launcher (torchrun) may take to end its own workers
LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
# What frameworks/<name>/distributed.py exports (frameworks.get_part checks it).
DISTRIBUTED_API = ("ENGINES", "DEFAULT_ENGINE", "DataParallelTrainer", "train_data_parallel")


class ReplicaFailed(RuntimeError):
    """A replica process died, hung, or wrote no result; the message names it and shows its stderr."""


def shard_bounds(batch_size: int, replicas: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) shards whose sizes differ by at most one: 128 over 3 -> 43, 43, 42."""
    base, extra = divmod(batch_size, replicas)
    bounds, start = [], 0
    for rank in range(replicas):
        stop = start + base + (rank < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard(batch_indices: np.ndarray, replicas: int, rank: int) -> np.ndarray:
    """This replica's part of a global batch of example indices."""
    start, stop = shard_bounds(len(batch_indices), replicas)[rank]
    return batch_indices[start:stop]


# Each replica is a process with its own copy of the framework on a share of the cores. Up to a
# few per core they still take turns usefully (the tests run 3 on 2 cores); beyond that every
# all-reduce waits on replicas the OS has descheduled, and the processes alone fill the memory.
MAX_REPLICAS_PER_CORE = 4


def replicas_problem(replicas: int, batch_size: int, train_examples: int, machine_cores: int) -> str | None:
    """Why this machine cannot run `replicas` replicas of this recipe (with the fix), or None when it can."""
    fix = "every replica needs at least one example per step: use --replicas {} or fewer, or a larger --batch-size"
    if replicas > min(batch_size, train_examples):
        smallest = min(batch_size, train_examples)
        return f"--replicas {replicas} is more replicas than a global batch has examples ({smallest}); {fix.format(smallest)}"
    last = train_examples % batch_size
    if replicas > last > 0:
        return (
            f"--replicas {replicas} is more replicas than the epoch's last batch has examples ({last}: {train_examples:,} "
            f"training examples in batches of {batch_size}); {fix.format(last)}"
        )
    limit = MAX_REPLICAS_PER_CORE * machine_cores
    if replicas > limit:
        return (
            f"--replicas {replicas} is more than this machine can run: {machine_cores} cores take at most {limit} replica "
            f"processes ({MAX_REPLICAS_PER_CORE} per core); use --replicas {limit} or fewer, or a machine with more cores"
        )
    return None


def threads_per_replica(replicas: int) -> int:
    """N replica processes share the machine's cores: more threads than cores only adds switching."""
    return max(1, cores() // replicas)


def thread_env(replicas: int) -> dict[str, str]:
    """Thread limits every framework's replica reads at start-up (engines add their framework's own)."""
    threads = str(threads_per_replica(replicas))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ReplicaJob:
    """Everything a replica process needs, written as JSON for it to read."""

    framework: str
    engine: str
    replicas: int
    config: TrainConfig
    initial_weights: str
    out: str
    steps: int = 50
    data_dir: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    timeout: float = COLLECTIVE_TIMEOUT_S
    # "module:Class" of the trainer the replicas train with, a subclass of the engine's
    # DataParallelTrainer; empty for that class itself. The hook through which another reduction
    # is injected into the replica processes (frameworks/<name>/pitfalls.py::MeanOfShardMeansTrainer).
    trainer: str = ""

    def save(self, path: Path) -> Path:
        return write_json(path, {**asdict(self), "config": self.config.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReplicaJob:
        fields = json.loads(Path(path).read_text())
        return cls(**{**fields, "config": TrainConfig(**fields["config"])})


def replica_trainer_class(job: ReplicaJob, engine_trainer: type) -> type:
    """The class a replica trains with: job.trainer when the job names one, else the engine's own."""
    if not job.trainer:
        return engine_trainer
    module, _, name = job.trainer.partition(":")
    trainer = getattr(importlib.import_module(module), name, None)
    # By name: a replica runs its distributed.py as __main__, and module imports it again.
    if not (isinstance(trainer, type) and engine_trainer.__name__ in (c.__name__ for c in trainer.__mro__)):
        raise ValueError(f"job.trainer {job.trainer!r} is not a subclass of {engine_trainer.__name__}")
    return trainer


def check_engine(job: ReplicaJob, engines: dict[str, str], cpu_only: bool = False) -> None:
    """One clear error before any process starts: an engine the framework does not have, or a GPU
    asked of engines that place their replicas on CPU devices."""
    if job.engine not in engines:
        raise ValueError(f"unknown {job.framework} data-parallel engine {job.engine!r}; choose one of {', '.join(engines)}")
    if cpu_only and job.config.device == "gpu":
        raise ValueError(f"the {job.framework} data-parallel engines here place their replicas on CPU devices; use device='cpu'")


def replica_result_path(out: str | os.PathLike, rank: int) -> Path:
    return Path(out) / f"replica{rank}.json"


def replica_weights_path(out: str | os.PathLike, rank: int) -> Path:
    return Path(out) / f"replica{rank}_weights.npz"


def heartbeat_path(out: str | os.PathLike, rank: int) -> Path:
    return Path(out) / f"replica{rank}.alive"


class Heartbeat:
    """Touches a replica's heartbeat file as it trains (at most once a second), so the launcher
    can tell a long run from a hung one by the file's modification time."""

    def __init__(self, path: Path):
        self.path, self.last = path, float("-inf")
        self()

    def __call__(self, *_progress) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_INTERVAL_S:
            self.path.touch()
            self.last = now


def last_heartbeat(folder: Path | None) -> float:
    """The newest heartbeat's wall-clock time under folder, or -inf when there is none."""
    times = [path.stat().st_mtime for path in folder.glob("replica*.alive")] if folder else []
    return max(times, default=float("-inf"))


def train_replica(backend, job: ReplicaJob, rank: int, model, make_trainer: Callable, evaluate: Callable | None = None) -> dict:
    """One replica's run with the common batch order: the first job.steps losses, then job.config's
    epochs from the same start. make_trainer(model, data, config) returns the engine's trainer,
    whose step() takes the GLOBAL batch's indices and returns the global batch's mean loss.

    Writes replica<rank>.json and replica<rank>_weights.npz under job.out and returns the record.
    """
    config = job.config
    data = load_fashion_mnist(job.data_dir, train_subset=job.train_subset, test_subset=job.test_subset)
    initial = load_weights(job.initial_weights)
    backend.set_weights(model, initial)
    first_steps = step_losses(make_trainer(model, data, config), data, config, job.steps) if job.steps else []
    backend.set_weights(model, initial)
    evaluate = evaluate or (lambda x, y: backend.evaluate(model, x, y))
    history = fit(make_trainer(model, data, config), evaluate, data, config, on_batch=Heartbeat(heartbeat_path(job.out, rank)))
    save_weights(backend.get_weights(model), replica_weights_path(job.out, rank))
    record = dict(rank=rank, history=history, step_losses=first_steps, final_test_accuracy=history[-1]["test_accuracy"])
    write_json(replica_result_path(job.out, rank), record)
    return record


def run_processes(
    commands: Sequence[Sequence[str]], env: dict[str, str], log_dir: Path, timeout: float, names: Sequence[str], heartbeats: Path | None = None
) -> None:
    """Start every command in its own process group and wait for all of them.

    When one fails, or none has shown progress for timeout plus START_UP_MARGIN_S (since the start,
    or since the newest replica heartbeat under `heartbeats`, see Heartbeat), the others (which may
    wait in a collective for it) are ended by their process group id: SIGTERM first, so a launcher
    such as torchrun can end its own workers, then SIGKILL. ReplicaFailed names the first culprit
    with its output's tail.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    processes, logs = [], []
    for command, name in zip(commands, names):
        log = open(log_dir / f"{name}.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    started, patience = time.time(), timeout + START_UP_MARGIN_S
    failure = None
    try:
        while failure is None and any(p.poll() is None for p in processes):
            failed = next(((p, n) for p, n in zip(processes, names) if p.poll() not in (None, 0)), None)
            if failed:
                failure = f"{failed[1]} exited with code {failed[0].returncode}"
            elif time.time() > max(started, last_heartbeat(heartbeats)) + patience:
                still_running = ", ".join(n for p, n in zip(processes, names) if p.poll() is None)
                failure = f"{still_running} still running with no progress for {patience:.0f} s"
            else:
                time.sleep(0.1)
        if failure is None:
            failed = next(((p, n) for p, n in zip(processes, names) if p.returncode != 0), None)
            failure = failed and f"{failed[1]} exited with code {failed[0].returncode}"
    finally:
        end_process_groups(processes)
        for log in logs:
            log.close()
        for beat in heartbeats.glob("replica*.alive") if heartbeats else ():
            beat.unlink(missing_ok=True)  # only a sign of life while the run lasts
    if failure:
        culprit = failure.split(" ", 1)[0].rstrip(",")
        log_file = log_dir / f"{culprit}.log"
        tail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
        raise ReplicaFailed(f"{failure}:\n{tail}")


def end_process_groups(processes: Sequence[subprocess.Popen]) -> None:
    """End every process still running, with its group: SIGTERM, a grace period, then SIGKILL."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Launch(NamedTuple):
    """How an engine starts a job's replicas on this machine: one command per process, its name
    (for the logs and errors), one device per replica, and the processes' environment. processes:
    how many processes train, where a command is a launcher that starts them (torchrun); by
    default one per command."""

    commands: list[list[str]]
    names: list[str]
    devices: list[str]
    env: dict[str, str]
    processes: int | None = None


def launcher(engines: dict[str, str], plan: Callable[[ReplicaJob, Path], Launch], cpu_only: bool = False) -> Callable[[ReplicaJob], dict]:
    """A framework's train_data_parallel(job), the one launcher every engine shares: check the engine
    (cpu_only: refuse a GPU), save the job, start the processes plan(job, job_path) describes with
    the repository on their PYTHONPATH, wait for them (bounded, see run_processes), and collect what
    the replicas wrote."""

    def train_data_parallel(job: ReplicaJob) -> dict:
        check_engine(job, engines, cpu_only)
        out = Path(job.out)
        job_path = job.save(out / "replica-job.json")
        commands, names, devices, env, processes = plan(job, job_path)
        # The replicas import common and frameworks from this checkout, wherever they start.
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))}
        start = time.perf_counter()
        run_processes(commands, env, out / "logs", job.timeout, names, heartbeats=out)
        processes = processes or len(commands)
        return collect(job, engines[job.engine], processes=processes, devices=devices, seconds=time.perf_counter() - start)

    return train_data_parallel


def python_module(module: str, *args: str) -> list[str]:
    """A command that runs `module` with this interpreter (a replica runs in its framework's env too)."""
    return [sys.executable, "-m", module, *args]


def collect(job: ReplicaJob, engine_description: str, processes: int, devices: list[str], seconds: float) -> dict:
    """The data-parallel result of one (framework, replicas) run, from the files the replicas wrote.

    Rank 0's history and losses stand for the run; every replica that wrote weights is compared
    with rank 0's, and the largest difference is reported (the replicas must hold the same weights).
    """
    first = json.loads(replica_result_path(job.out, 0).read_text())
    reference = load_weights(replica_weights_path(job.out, 0))
    difference = 0.0
    for rank in range(1, job.replicas):
        path = replica_weights_path(job.out, rank)
        if path.exists():
            other = load_weights(path)
            difference = max(difference, max(float(np.max(np.abs(other[k] - reference[k]))) for k in reference))
    history = first["history"]
    epoch_seconds = sum(entry["seconds"] for entry in history)
    train_examples = sum(entry["images_per_second"] * entry["seconds"] for entry in history)
    return dict(
        engine=engine_description, processes=processes, devices=devices, history=history, step_losses=first["step_losses"],
        final_test_accuracy=first["final_test_accuracy"], weights=str(replica_weights_path(job.out, 0)),
        images_per_second=train_examples / epoch_seconds if epoch_seconds else 0.0,
        replica_max_weight_difference=difference, seconds=seconds,
    )

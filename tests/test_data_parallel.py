"""Data-parallel training: every engine of every backend, N replicas against one.

Each framework's engine runs in its own env (frameworks/<name>/distributed.py); N replicas split
each global batch and must give the single-replica run's step losses, epoch losses and weights.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

from common import data_parallel
from common.data import load_fashion_mnist
from common.data_parallel import DISTRIBUTED_API, ReplicaFailed, ReplicaJob, check_engine, run_processes, shard, shard_bounds
from common.interface import TrainConfig, missing_names
from common.parity import EPOCH_LOSS_TOL, STEP_LOSS_TOL
from common.pitfalls import REDUCTION_TEST, PitfallContext, data_parallel_reduction, measurements
from common.training import fit, step_losses
from common.weights import init_weights, load_weights, save_weights
from frameworks import get_part

TRAIN_SUBSET = 600  # batches of 128, 128, 128, 128, 88: the last one splits unevenly over 3 replicas
TEST_SUBSET = 200
STEPS = 7  # crosses into the second epoch


def test_shards_cover_the_batch_and_differ_by_at_most_one():
    assert shard_bounds(128, 3) == [(0, 43), (43, 86), (86, 128)]
    assert [b - a for a, b in shard_bounds(96, 5)] == [20, 19, 19, 19, 19]
    indices = np.arange(10)
    assert np.concatenate([shard(indices, 4, rank) for rank in range(4)]).tolist() == list(range(10))


def test_an_unknown_engine_or_a_gpu_for_cpu_engines_is_refused_with_the_choices():
    engines = {"multi_process": "one process per replica", "single_process": "N devices in one process"}
    job = ReplicaJob(framework="jax", engine="nccl", replicas=2, config=TrainConfig(), initial_weights="initial.npz", out="out")
    with pytest.raises(ValueError, match="unknown jax data-parallel engine 'nccl'; choose one of multi_process, single_process"):
        check_engine(job, engines)
    on_gpu = ReplicaJob(framework="jax", engine="multi_process", replicas=2, config=TrainConfig(device="gpu"), initial_weights="i.npz", out="o")
    with pytest.raises(ValueError, match="place their replicas on CPU devices; use device='cpu'"):
        check_engine(on_gpu, engines, cpu_only=True)
    check_engine(on_gpu, engines)  # engines that can use GPUs accept it


class EngineTrainer:
    """Stands for an engine's DataParallelTrainer."""


class NaiveTrainer(EngineTrainer):
    """Stands for a pitfall's subclass of it."""


def test_a_job_names_its_replicas_trainer_or_gets_the_engines():
    job = ReplicaJob(framework="jax", engine="multi_process", replicas=2, config=TrainConfig(), initial_weights="i.npz", out="o")
    assert data_parallel.replica_trainer_class(job, EngineTrainer) is EngineTrainer
    named = ReplicaJob(**{**job.__dict__, "trainer": f"{__name__}:NaiveTrainer"})
    assert data_parallel.replica_trainer_class(named, EngineTrainer) is NaiveTrainer
    unrelated = ReplicaJob(**{**job.__dict__, "trainer": "common.interface:TrainConfig"})
    with pytest.raises(ValueError, match="is not a subclass of EngineTrainer"):
        data_parallel.replica_trainer_class(unrelated, EngineTrainer)


@pytest.fixture(scope="module")
def small_data():
    try:
        return load_fashion_mnist(train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET, download=False)
    except Exception as err:  # DataError: no real data here
        pytest.skip(f"real Fashion-MNIST not available: {err}")


def distributed_module(backend):
    if backend.name == "numpy":
        pytest.skip("the numpy oracle has no data-parallel engine")
    return importlib.import_module(f"frameworks.{backend.name}.distributed")


def test_distributed_and_pitfalls_modules_fulfil_their_contracts(backend):
    distributed = distributed_module(backend)
    assert missing_names(distributed, DISTRIBUTED_API) == [], f"frameworks/{backend.name}/distributed.py lacks these names"
    assert get_part(backend.name, "distributed") is distributed
    assert distributed.DEFAULT_ENGINE in distributed.ENGINES
    assert issubclass(distributed.DataParallelTrainer, backend.Trainer)
    pitfalls = get_part(backend.name, "pitfalls")
    assert pitfalls.REDUCTION_ENGINE in distributed.ENGINES
    assert issubclass(pitfalls.MeanOfShardMeansTrainer, distributed.DataParallelTrainer)
    assert measurements(pitfalls), f"frameworks/{backend.name}/pitfalls.py measures nothing"  # and every measure_<key> names an entry


@pytest.mark.slow
def test_every_engine_equals_one_replica(backend, small_data, tmp_path):
    # 3 replicas: shards of 43/43/42, the split where a wrong reduction shows. An even split, 2
    # replicas of the default engine, runs in the parity env (compare.py --quick --replicas 2).
    replicas = 3
    distributed = distributed_module(backend)
    config = TrainConfig(epochs=1, lr=0.5, seed=4)
    initial = save_weights(init_weights(config.seed), tmp_path / "initial.npz")
    model = backend.build()
    backend.set_weights(model, load_weights(initial))
    expected_steps = step_losses(backend.make_trainer(model, small_data, config), small_data, config, STEPS)
    backend.set_weights(model, load_weights(initial))
    expected = fit(backend.make_trainer(model, small_data, config), lambda x, y: backend.evaluate(model, x, y), small_data, config)
    expected_weights = backend.get_weights(model)
    assert distributed.ENGINES, "a backend's distributed.py names at least one engine"
    for engine in distributed.ENGINES:
        job = ReplicaJob(
            framework=backend.name, engine=engine, replicas=replicas, config=config, initial_weights=str(initial),
            out=str(tmp_path / f"{engine}-{replicas}"), steps=STEPS, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET,
        )
        result = distributed.train_data_parallel(job)
        assert result["processes"] >= 1 and len(result["devices"]) == replicas, engine
        np.testing.assert_allclose(result["step_losses"], expected_steps, atol=STEP_LOSS_TOL, err_msg=engine)
        assert abs(result["history"][0]["train_loss"] - expected[0]["train_loss"]) <= EPOCH_LOSS_TOL, engine
        assert result["replica_max_weight_difference"] <= 1e-6, engine
        trained = load_weights(result["weights"])
        for name, value in expected_weights.items():
            np.testing.assert_allclose(trained[name], value, atol=1e-4, err_msg=f"{engine}: {name}")


@pytest.mark.slow
def test_data_parallel_takes_the_global_mean_not_the_mean_of_shard_means(backend, small_data):
    """Guards "Data-parallel reduction" in the pitfalls: two real runs of the framework's engine on
    3 unequal shards (43/43/42, then 30/29/29 on the last batch of 88) against 1 replica. The
    engine's reduction matches; the naive mean of the shards' means falls outside the tolerance."""
    distributed = distributed_module(backend)
    pitfalls = importlib.import_module(f"frameworks.{backend.name}.pitfalls")
    # The d2l recipe: classic (no dropout masks to differ), SGD lr 0.1; the record the pitfalls report shows.
    ctx = PitfallContext(data=small_data, config=TrainConfig(epochs=1), initial=init_weights(0), first_steps=5)
    row = data_parallel_reduction(ctx, backend, pitfalls, distributed.train_data_parallel)
    assert row["correct"] <= STEP_LOSS_TOL < row["mistaken"], row
    assert (row["difference"], row["framework"], row["test"]) == ("Data-parallel reduction", backend.name, REDUCTION_TEST)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_replica_that_dies_is_named_and_the_others_are_ended(tmp_path):
    waiting_pid = tmp_path / "waiting.pid"
    commands = [
        python("import time; time.sleep(0.5); raise SystemExit(3)"),
        python(f"import os, time; open({str(waiting_pid)!r}, 'w').write(str(os.getpid())); time.sleep(120)"),  # waits as in a collective
    ]
    with pytest.raises(ReplicaFailed, match="replica0 exited with code 3"):
        run_processes(commands, dict(os.environ), tmp_path / "logs", timeout=60, names=["replica0", "replica1"])
    with pytest.raises(ProcessLookupError):
        os.kill(int(waiting_pid.read_text()), 0)  # no process is left running


def test_a_run_without_progress_is_ended_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(data_parallel, "START_UP_MARGIN_S", 0)
    with pytest.raises(ReplicaFailed, match="replica0, replica1 still running with no progress for 1 s"):
        run_processes([python("import time; time.sleep(120)")] * 2, dict(os.environ), tmp_path / "logs", timeout=1, names=["replica0", "replica1"])


def test_a_long_run_that_beats_is_not_a_hang(tmp_path, monkeypatch):
    """Longer than the timeout in all, but with a heartbeat (a training step) more often than that."""
    monkeypatch.setattr(data_parallel, "START_UP_MARGIN_S", 0)
    beat = data_parallel.heartbeat_path(tmp_path, 0)
    trains = python(f"import pathlib, time\nfor _ in range(12):\n    pathlib.Path({str(beat)!r}).touch(); time.sleep(0.25)")
    run_processes([trains], dict(os.environ), tmp_path / "logs", timeout=1, names=["replica0"], heartbeats=tmp_path)
    assert not beat.exists()  # a sign of life only while the run lasts

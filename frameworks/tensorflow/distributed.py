"""Data-parallel LeNet training with tf.distribute, TensorFlow's own engine.

Two engines, one trainer (DataParallelTrainer) and one replica entry point:

- "multi_worker": tf.distribute.MultiWorkerMirroredStrategy, one process per replica. Each
  process is a worker of a cluster described by its TF_CONFIG environment variable, as TensorFlow's
  users launch one; the strategy all-reduces the gradients with its collective ops (a ring over
  gRPC between CPU workers).
- "mirrored": tf.distribute.MirroredStrategy in one process over N logical CPU devices carved out
  of the host's CPU, one replica each; the strategy reduces the gradients across those devices.

The launcher (train_data_parallel) writes the job, starts the replica processes with
`python -m frameworks.tensorflow.distributed REPLICA_JOB_JSON` and collects what they wrote.

Across machines (multi_worker): copy the repository, the job file, its initial weights and the
data to the same paths on every host, then start one replica per host with TF_CONFIG listing every
worker's host:port and that host's own index, e.g. on the second of two hosts:

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 1}}' \\
        python -m frameworks.tensorflow.distributed replica-job.json

with the job's `replicas` equal to the number of workers. Each worker writes its replica<rank>
files under the job's `out` folder on its own host; rank 0's stand for the run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common import data_parallel
from common.interface import TrainConfig
from common.weights import save_weights
from frameworks import tensorflow as backend
from frameworks.tensorflow.convert import to_canonical
from frameworks.tensorflow.train import Trainer

ENGINES = {
    "multi_worker": "tf.distribute.MultiWorkerMirroredStrategy: one process per replica, joined through TF_CONFIG, "
    "gradients all-reduced by its collective ops",
    "mirrored": "tf.distribute.MirroredStrategy: one process, one replica per logical CPU device "
    "(tf.config.set_logical_device_configuration)",
}
DEFAULT_ENGINE = "multi_worker"
REPLICA_MODULE = "frameworks.tensorflow.distributed"


class DataParallelTrainer(Trainer):
    """The backend's Trainer (training set on the device as uint8, the backend's optimizer, its
    update) run as one replica of a tf.distribute strategy: strategy.run updates every local replica
    from its shard.

    The strategy SUMS the replicas' gradients (Keras's optimizer.apply all-reduces them in a replica
    context), so the inherited `reduce`, each shard's loss sum over the GLOBAL batch size, makes that
    sum the gradient of the global batch's mean loss, whatever the shard sizes: 43, 43 and 42 of 128
    over 3 replicas, or an empty shard. tf.nn.compute_average_loss left without global_batch_size
    divides by this shard's size times the number of replicas instead, which weighs the examples of
    a smaller shard more.
    """

    def __init__(self, model: keras.Model, data, config: TrainConfig, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        with strategy.scope():  # the optimizer's slots and the epoch totals become mirrored variables
            super().__init__(model, data, config)
        # Replaces the single-device step. The global batch travels as one ragged tensor, a row
        # per replica's shard: rows of any length trace the step once for every batch and shard
        # size (43, 42, the last batch's 30 or an empty shard), as the backend's [None] signature does.
        shards_spec = tf.RaggedTensorSpec([strategy.num_replicas_in_sync, None], tf.int64, ragged_rank=1, row_splits_dtype=tf.int64)
        self._step = tf.function(self._distributed_step, input_signature=[shards_spec])

    def _replica_update(self, batch_indices: tf.Tensor, global_batch_size: tf.Tensor) -> tf.Tensor:
        loss_sum, correct = self.update(batch_indices, global_batch_size)
        # This shard's part of the global batch's mean loss (the engine sums the parts), whatever
        # the update differentiated.
        return tf.stack([tf.math.divide_no_nan(loss_sum, tf.cast(global_batch_size, loss_sum.dtype)), correct])

    def _distributed_step(self, shards: tf.RaggedTensor) -> tf.Tensor:
        own_shard = self.strategy.experimental_distribute_values_from_function(lambda ctx: shards[ctx.replica_id_in_sync_group])
        global_batch_size = tf.size(shards.flat_values, tf.int64)
        per_replica = self.strategy.run(self._replica_update, args=(own_shard, global_batch_size))
        # Summed by the engine over every replica of every worker: the global batch's mean loss and
        # its correct predictions (a float32 count, exact far beyond a batch's size).
        mean_loss, correct = tf.unstack(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
        self.loss_sum.assign_add(mean_loss * tf.cast(global_batch_size, tf.float32))
        self.correct.assign_add(tf.cast(correct, tf.int64))
        return mean_loss

    def step(self, global_batch_indices: np.ndarray) -> tf.Tensor:
        replicas = self.strategy.num_replicas_in_sync
        shards = [data_parallel.shard(global_batch_indices, replicas, rank) for rank in range(replicas)]
        return self._step(tf.RaggedTensor.from_row_lengths(np.concatenate(shards), [len(s) for s in shards]))


def join_multi_worker(job: data_parallel.ReplicaJob) -> tuple[tf.distribute.Strategy, int]:
    """Join the cluster of this process's TF_CONFIG; the rank is the worker's index in it."""
    tf.config.set_visible_devices([], "GPU")  # the strategy would otherwise take every GPU it sees
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=job.timeout)
    )
    return strategy, strategy.cluster_resolver.task_id


def join_mirrored(job: data_parallel.ReplicaJob) -> tuple[tf.distribute.Strategy, int]:
    """N logical CPU devices, one replica each. TensorFlow fixes its devices when it first runs
    anything, so this comes before the first op; the process holds every replica, as rank 0."""
    host = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(host, [tf.config.LogicalDeviceConfiguration()] * job.replicas)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")]), 0


JOIN = {"multi_worker": join_multi_worker, "mirrored": join_mirrored}


def save_other_local_replicas(model: keras.Model, strategy: tf.distribute.Strategy, job: data_parallel.ReplicaJob) -> None:
    """Write the weights every further replica of this process holds, so the harness compares the
    copies themselves (train_replica wrote the first one's, which get_weights reads)."""
    copies = {v.path: strategy.experimental_local_results(v.value) for v in model.trainable_variables}
    for rank in range(1, len(strategy.extended.worker_devices)):
        weights = to_canonical(model, {path: values[rank].numpy() for path, values in copies.items()})
        save_weights(weights, data_parallel.replica_weights_path(job.out, rank))


def main(argv: list[str]) -> int:
    job = data_parallel.ReplicaJob.load(argv[0])
    strategy, rank = JOIN[job.engine](job)
    if strategy.num_replicas_in_sync != job.replicas:
        raise RuntimeError(f"the strategy has {strategy.num_replicas_in_sync} replicas, the job asks for {job.replicas}")
    with strategy.scope():  # variables created here are mirrored on every replica
        model = backend.build(job.config.variant, "cpu")
    trainer_class = data_parallel.replica_trainer_class(job, DataParallelTrainer)
    data_parallel.train_replica(backend, job, rank, model, lambda model, data, config: trainer_class(model, data, config, strategy))
    save_other_local_replicas(model, strategy, job)
    return 0


def worker_tf_config(workers: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def replica_launch(job: data_parallel.ReplicaJob, job_path: Path) -> data_parallel.Launch:
    """The processes of the job's engine: one per worker (multi_worker), or one for all (mirrored)."""
    replica = data_parallel.python_module(REPLICA_MODULE, str(job_path))
    env = replica_env(job)
    if job.engine == "mirrored":
        return data_parallel.Launch([replica], ["mirrored"], [f"/job:localhost/replica:0/task:0/device:CPU:{r}" for r in range(job.replicas)], env)
    ports = set()
    while len(ports) < job.replicas:  # distinct, though each probe alone could repeat an earlier port
        ports.add(data_parallel.free_port())
    workers = [f"{data_parallel.LOOPBACK}:{port}" for port in sorted(ports)]
    # `env` sets TF_CONFIG for this one process, then becomes the replica
    commands = [["env", f"TF_CONFIG={worker_tf_config(workers, rank)}", *replica] for rank in range(job.replicas)]
    devices = [f"/job:worker/replica:0/task:{rank}/device:CPU:0" for rank in range(job.replicas)]
    return data_parallel.Launch(commands, [f"worker{rank}" for rank in range(job.replicas)], devices, env)


def replica_env(job: data_parallel.ReplicaJob) -> dict[str, str]:
    """This environment without TF_CONFIG, plus thread limits that TensorFlow reads when it loads:
    the replica processes share the cores, and the mirrored engine's one process holds them all."""
    processes = 1 if job.engine == "mirrored" else job.replicas
    threads = str(data_parallel.threads_per_replica(processes))
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    return {**env, **data_parallel.thread_env(processes), "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}


# Launch the job's engine on this machine, bounded by job.timeout, and collect what the replicas wrote.
train_data_parallel = data_parallel.launcher(ENGINES, replica_launch, cpu_only=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Data-parallel LeNet training in JAX: one global program, jax.jit, over a batch sharded across devices.

JAX has no gradient-averaging wrapper like PyTorch's DDP. The program is written for the whole
global batch; the batch's arrays are sharded along a 1-D device mesh (NamedSharding(mesh,
P("data"))), the weights are replicated (P()), and jax.jit partitions the step, inserting the
all-reduces of the loss, the gradients and the running totals itself. Two engines run that program:

  multi_process    one process and one CPU device per replica, joined by jax.distributed.initialize;
                   XLA's CPU collectives between processes use gloo over TCP. Each process hands in
                   only its own shard (jax.make_array_from_process_local_data).
  virtual_devices  one process that splits its CPU into N virtual devices (JAX_NUM_CPU_DEVICES=N);
                   the same program, with the collectives inside the process.

Sharding needs equal per-device shapes, so every global batch is padded to a multiple of N and
the padding is masked out of the loss (see train.py::mean_over_real_examples).

Launch: train_data_parallel(job) writes replica-job.json and starts
`python -m frameworks.jax.distributed replica-job.json [--process-id I --coordinator HOST:PORT]`,
once per replica (multi_process) or once (virtual_devices).

Across machines (multi_process): JAX's launcher is its coordinator. Copy replica-job.json (with the
data and the initial weights at the same paths) to every host and run the same command on each,
with process 0's address and a free port as the coordinator and a distinct process id:

    host0$ python -m frameworks.jax.distributed replica-job.json --process-id 0 --coordinator host0:7777
    host1$ python -m frameworks.jax.distributed replica-job.json --process-id 1 --coordinator host0:7777

(job.replicas is num_processes). Under Slurm or Open MPI, jax.distributed.initialize() can read
all three from the environment. gloo then connects the processes at the address each host's own
hostname resolves to.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import frameworks.jax as backend
from common import data_parallel, interface
from common.weights import Weights, save_weights
from frameworks.jax.convert import to_canonical
from frameworks.jax.model import LeNet
from frameworks.jax.train import train_step

ENGINES = {
    "multi_process": "one process and CPU device per replica: jax.distributed.initialize with gloo CPU "
    "collectives, jax.jit over NamedSharding(Mesh, P('data')) built by jax.make_array_from_process_local_data",
    "virtual_devices": "one process with N virtual CPU devices (JAX_NUM_CPU_DEVICES): jax.jit over "
    "NamedSharding(Mesh, P('data'))",
}
DEFAULT_ENGINE = "multi_process"
MODULE = "frameworks.jax.distributed"
DATA_AXIS = "data"


@functools.cache
def _compiled_step(mesh: Mesh):
    """train.py's step, jitted over the mesh. Outputs pinned to "replicated": every device keeps a
    full, identical copy of the weights. State and totals are donated, as in train.py."""
    return jax.jit(train_step, static_argnums=(0, 1), donate_argnums=(2, 3), out_shardings=NamedSharding(mesh, PartitionSpec()))


def _replicate(tree, sharding: NamedSharding):
    """One global array per leaf, a copy on every device, from this process's copy.

    Every process holds the same values (the canonical initial weights, the same data), which is
    what make_array_from_process_local_data asks of a replicated sharding.
    """

    def place(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # dropout's key: carried as its raw bits
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(place, tree)


class DataParallelTrainer(backend.Trainer):
    """The backend's Trainer, placed on a device mesh: replicated weights and data, sharded batches.

    Each process lays the shards (common.data_parallel.shard) of its own devices into the padded
    per-device slots of the global batch; jax.jit runs the backend's step over all devices at once,
    with the padding's weight 0 in the inherited objective.
    """

    def __init__(self, model: LeNet, data, config: interface.TrainConfig, mesh: Mesh):
        # The backend's own set-up (training copy of the model, dropout seed, optimizer, uint8 NHWC
        # data on the device), then placed on every device of the mesh.
        self.replicas = mesh.devices.size
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        super().__init__(model, data, config)
        # Mesh positions of this process's devices: the shards it hands in, in mesh order.
        self.local_ranks = [rank for rank, device in enumerate(mesh.devices.flat) if device.process_index == jax.process_index()]
        self.state, self.images, self.labels = _replicate((self.state, self.images, self.labels), self.replicated)
        self.step_function = _compiled_step(mesh)

    def zero_totals(self):
        return _replicate((np.float32(0), np.int32(0)), self.replicated)

    def _sharded_batch(self, batch_indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Global (indices, weight) arrays of ceil(B/N) slots per device; padding points at example 0 with weight 0."""
        slots = math.ceil(len(batch_indices) / self.replicas)
        indices = np.zeros((len(self.local_ranks), slots), np.int32)
        weight = np.zeros((len(self.local_ranks), slots), np.float32)
        for row, rank in enumerate(self.local_ranks):
            mine = data_parallel.shard(batch_indices, self.replicas, rank)  # may be empty: then all padding
            indices[row, : len(mine)] = mine
            weight[row, : len(mine)] = 1
        global_shape = (slots * self.replicas,)
        return jax.make_array_from_process_local_data(self.batch_sharding, (indices.ravel(), weight.ravel()), global_shape)

    def step(self, batch_indices: np.ndarray) -> jax.Array:
        indices, weight = self._sharded_batch(np.asarray(batch_indices))
        self.state, self.totals, loss = self.step_function(
            self.objective, self.graphdef, self.state, self.totals, self.images, self.labels, indices, weight
        )
        return loss  # the global mean, replicated: every process can read it (as the totals)

    def device_weights(self, device) -> Weights:
        """The canonical weights as one device holds them."""
        params = nnx.filter_state(self.state[0], nnx.Param)
        return to_canonical(jax.tree.map(lambda leaf: next(s.data for s in leaf.addressable_shards if s.device == device), params))

    def sync_model(self) -> None:
        # A copy (may_alias=False) of this process's first replica: the next step donates the buffers.
        params = nnx.filter_state(self.state[0], nnx.Param)
        nnx.update(self.model, jax.tree.map(lambda leaf: jax.device_put(leaf.addressable_data(0), self.device, may_alias=False), params))


@functools.partial(nnx.jit, static_argnums=0)
def build_on_this_process(variant: str) -> LeNet:
    """backend.build() on this process's default (local) CPU device, in one compiled call rather than
    one per initializer: each replica process compiles everything anew, so this shortens its start-up."""
    return LeNet(variant, nnx.Rngs(params=0, dropout=0))


def join_processes(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """Join the multi-process run. Must come before anything starts JAX's CPU backend."""
    seconds = max(1, math.ceil(timeout))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        # The coordinator listens where it is reached (loopback here), not on every interface.
        coordinator_bind_address=coordinator if process_id == 0 else None,
        # A peer that does not show up, stops sending heartbeats or never finishes fails the others
        # after the job's timeout instead of leaving them waiting.
        initialization_timeout=seconds, heartbeat_timeout_seconds=seconds, shutdown_timeout_seconds=seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="One replica of a data-parallel JAX run.")
    parser.add_argument("job", help="replica-job.json, as train_data_parallel writes it")
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (multi_process engine)")
    parser.add_argument("--process-id", type=int, default=0, help="this process's rank, 0 .. replicas-1 (multi_process engine)")
    args = parser.parse_args(argv)
    job = data_parallel.ReplicaJob.load(args.job)
    if job.engine not in ENGINES:
        parser.error(f"unknown engine {job.engine!r} in {args.job}; choose from {', '.join(ENGINES)}")
    if job.engine == "multi_process":
        if not args.coordinator:
            parser.error("the multi_process engine needs --coordinator HOST:PORT")
        join_processes(args.coordinator, job.replicas, args.process_id, job.timeout)
    mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
    if mesh.devices.size != job.replicas:
        raise RuntimeError(
            f"{job.replicas} replicas but JAX sees {mesh.devices.size} devices "
            f"(virtual_devices: set JAX_NUM_CPU_DEVICES={job.replicas} before starting the process)"
        )
    trainers = []
    trainer_class = data_parallel.replica_trainer_class(job, DataParallelTrainer)

    def make_trainer(model, data, config):
        trainers.append(trainer_class(model, data, config, mesh))
        return trainers[-1]

    data_parallel.train_replica(backend, job, jax.process_index(), build_on_this_process(job.config.variant), make_trainer)
    if job.engine == "virtual_devices":
        # train_replica wrote device 0's copy; the other virtual devices' copies go beside it, so
        # the launcher checks that every device holds the same weights.
        for rank, device in list(enumerate(mesh.devices.flat))[1:]:
            save_weights(trainers[-1].device_weights(device), data_parallel.replica_weights_path(job.out, rank))
    return 0


def _replica_env(processes: int, devices_per_process: int) -> dict[str, str]:
    """The launched processes' environment; read when JAX loads, so set before it does."""
    threads = data_parallel.threads_per_replica(processes)
    return {
        **os.environ,
        **data_parallel.thread_env(processes),
        "NPROC": str(threads),  # the size of XLA's CPU thread pool (default: every core)
        "JAX_PLATFORMS": "cpu",  # both engines run on CPU devices, also where a GPU is visible
        "JAX_NUM_CPU_DEVICES": str(devices_per_process),
    }


def replica_launch(job: data_parallel.ReplicaJob, job_path: Path) -> data_parallel.Launch:
    """One process per replica joined through a coordinator (multi_process), or one process with N devices."""
    if job.engine == "multi_process":
        coordinator = f"{data_parallel.LOOPBACK}:{data_parallel.free_port()}"
        commands = [
            data_parallel.python_module(MODULE, str(job_path), "--process-id", str(rank), "--coordinator", coordinator) for rank in range(job.replicas)
        ]
        return data_parallel.Launch(
            commands, [f"replica{rank}" for rank in range(job.replicas)], [f"cpu of process {rank}" for rank in range(job.replicas)],
            _replica_env(processes=job.replicas, devices_per_process=1),
        )
    return data_parallel.Launch(
        [data_parallel.python_module(MODULE, str(job_path))], ["virtual-devices"],
        [f"virtual cpu {rank} of process 0" for rank in range(job.replicas)], _replica_env(processes=1, devices_per_process=job.replicas),
    )


# Launch the job's engine on this machine, bounded by job.timeout, and collect what the replicas wrote.
train_data_parallel = data_parallel.launcher(ENGINES, replica_launch, cpu_only=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

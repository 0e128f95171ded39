"""Data-parallel LeNet training with MXNet's own engine: the kvstore behind gluon.Trainer.

Two engines, one trainer (DataParallelTrainer), because Gluon spells both the same way: the model
holds one copy of its parameters per context, gluon.Trainer(kvstore=kv) pushes every context's
gradients into the kvstore, which SUMS them, pulls the sum back into each context, and each
context's optimizer applies the same update to its copy.

- "dist_sync": MXNet's parameter server (ps-lite), as MXNet's tools/launch.py starts it on one
  machine: one scheduler, one server and N worker processes, all running the same command and told
  their part by DMLC_ROLE. A scheduler or server does its work inside `import mxnet`
  (mxnet/kvstore/kvstore_server.py) and exits when the workers finish; each worker calls
  mx.kv.create("dist_sync") and trains on one context. Here the launcher runs, on the loopback
  address:

      DMLC_PS_ROOT_URI=127.0.0.1 DMLC_PS_ROOT_PORT=PORT DMLC_NUM_SERVER=1 DMLC_NUM_WORKER=N \\
      DMLC_NODE_HOST=127.0.0.1 DMLC_ROLE=scheduler|server|worker \\
          python -m frameworks.mxnet.distributed OUT/replica-job.json      (N + 2 processes)

- "local": one process, N contexts mx.cpu(0..N-1), mx.kv.create("local") summing across them.

Across machines, run the dist_sync processes on the hosts with DMLC_PS_ROOT_URI and
DMLC_PS_ROOT_PORT naming the scheduler's host and port, DMLC_NUM_SERVER and DMLC_NUM_WORKER the
totals, DMLC_ROLE per process and DMLC_NODE_HOST (or DMLC_INTERFACE) the address each node is
reached at; or list the hosts in a file and let MXNet's launcher start them over ssh:

    python tools/launch.py -n N -s 1 -H hostfile --launcher ssh \\
        python -m frameworks.mxnet.distributed job.json

The job file, the data and the initial weights must sit at the same paths on every host, and
job.out on a shared folder (rank 0 writes the history). Give each worker OMP_NUM_THREADS = its
host's cores / workers on that host.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import traceback
from pathlib import Path

import mxnet as mx
import numpy as np

from common import data_parallel
from common.interface import TrainConfig
from common.weights import Weights, save_weights
from frameworks import mxnet as backend
from frameworks.mxnet.convert import canonical_params
from frameworks.mxnet.train import Trainer, make_optimizer, training_set_on

ENGINES = {
    "dist_sync": "mx.kv.create('dist_sync'): MXNet's parameter server (ps-lite scheduler, 1 server, one worker "
    "process per replica, roles set by DMLC_ROLE); gluon.Trainer(kvstore=kv) sums the gradients on the server",
    "local": "mx.kv.create('local'): one process, one context per replica (mx.cpu(0..N-1)); "
    "gluon.Trainer(kvstore=kv) sums the contexts' gradients",
}
DEFAULT_ENGINE = "dist_sync"
REPLICA_MODULE = "frameworks.mxnet.distributed"


class KVStoreGroup:
    """This process's part of the run: its kvstore, its contexts and their shards, and its gluon.Trainer.

    A kvstore initialises each key once. Gluon's trainer keys every parameter by its index and, on
    its first step, broadcasts rank 0's values under those keys; a second gluon.Trainer on the same
    dist kvstore would initialise them again, and rank 0's second initial push counts as a gradient
    that the server waits for the other workers to match, forever. train_replica makes a trainer
    twice (first steps, then the epochs, with the job's config both times), so the process keeps one
    gluon.Trainer and starts each DataParallelTrainer from its saved fresh optimizer state (Adam's
    moments and step count).
    """

    def __init__(
        self, kvstore: mx.kv.KVStore, contexts: list[mx.Context], first_shard: int, shard_count: int, fresh_state: Path, step_timeout: float,
        trainer_class: type[DataParallelTrainer],
    ):
        self.kvstore, self.contexts, self.shard_count, self.step_timeout = kvstore, contexts, shard_count, step_timeout
        self.trainer_class = trainer_class
        self.shard_ranks = range(first_shard, first_shard + len(contexts))
        self.fresh_state = fresh_state
        self.optimizer: mx.gluon.Trainer | None = None
        self.totals_key: int | None = None

    def make_trainer(self, model, data, config: TrainConfig) -> DataParallelTrainer:
        if self.optimizer is None:
            # update_on_kvstore=False: the kvstore only sums and each context runs the optimizer.
            # Gluon's default for a dist kvstore (True) sends the optimizer to the server once, with
            # the first step's 1/batch_size, then refuses the last, smaller batch (and save_states).
            self.optimizer = make_optimizer(model, config, kvstore=self.kvstore, update_on_kvstore=False)
            self.optimizer.save_states(str(self.fresh_state))  # also initialises the kvstore's keys
            self.totals_key = len(model.collect_params().keys())  # the key after the parameters' 0..n-1
            self.kvstore.init(self.totals_key, mx.nd.zeros((2,)))
        else:
            self.optimizer.load_states(str(self.fresh_state))
        return self.trainer_class(model, data, config, self)


class DataParallelTrainer(Trainer):
    """The backend's Trainer over this process's contexts: step() takes the GLOBAL batch's indices,
    and the backend's update trains each context on its shard. The kvstore SUMS the contexts' and
    workers' gradients, so the inherited `reduce` (back-propagate each shard's per-example losses,
    the gradient of its loss SUM, then step(n) with n = the GLOBAL batch size) makes the update the
    gradient of the global mean for any split: 128 over 3 replicas is 43 + 43 + 42. Shard MEANS
    summed (step(N) averages them) would weigh the 42 examples more. The kvstore also sums the
    (loss sum, correct) totals over all shards, so every replica reports the global batch's."""

    def __init__(self, model, data, config: TrainConfig, group: KVStoreGroup):
        super().__init__(model, data, config, optimizer=group.optimizer)
        self.group = group
        # The backend's training set sits on the first context; the others get their own copy.
        self.training_sets = [(self.images, self.labels)] + [training_set_on(context, data) for context in group.contexts[1:]]

    def step(self, global_batch_indices: np.ndarray) -> mx.np.ndarray:
        group = self.group
        # ps-lite has no timeout: a push waits forever for a dead or hung peer. Python's watchdog,
        # re-armed every step, ends this process with every thread's stack once a step has not
        # finished after job.timeout, so a hang is reported within it.
        faulthandler.dump_traceback_later(group.step_timeout, exit=True)
        shards = []
        for (images, labels), shard_rank in zip(self.training_sets, group.shard_ranks, strict=True):
            indices, weight = data_parallel.shard(global_batch_indices, group.shard_count, shard_rank), 1.0
            if len(indices) == 0:
                # MXNet's arrays cannot have a zero-length axis (0 means "unknown" in its shapes),
                # yet an empty shard must still push gradients, as dist_sync waits for every
                # worker's: it runs one example with weight 0, which adds nothing to the sums.
                indices, weight = global_batch_indices[:1], 0.0
            shards.append((images, labels, indices, weight))
        outputs = self.update(shards, len(global_batch_indices))
        shard_totals = [
            mx.nd.concat(losses.sum(), (logits.argmax(axis=1) == y).sum() * weight, dim=0)
            for (losses, logits, y), (*_, weight) in zip(outputs, shards, strict=True)
        ]
        group.kvstore.pushpull(group.totals_key, shard_totals)  # (loss sum, correct) summed over every shard, in place
        global_totals = shard_totals[0]
        self.loss_sum += global_totals[0:1]
        self.correct += global_totals[1:2]
        return (global_totals[0] / len(global_batch_indices)).as_np_ndarray()


def weights_on(model, context: mx.Context) -> Weights:
    """The canonical weights of the model's copy on one context."""
    return {key: param.data(context).asnumpy() for key, param in canonical_params(model).items()}


def replica_env(compute_processes: int) -> dict[str, str]:
    """This process's environment plus the replicas' thread limits, read when mxnet loads.

    `python -m frameworks.mxnet.distributed` imports frameworks.mxnet, and with it mxnet, before
    this module runs, so a replica cannot set them itself.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("DMLC_")}
    threads = data_parallel.thread_env(compute_processes)
    # MXNet's own pool: the threaded engine's operator threads (the suite's NaiveEngine has none).
    env.update(threads, MXNET_CPU_WORKER_NTHREADS=threads["OMP_NUM_THREADS"])
    return env


def replica_launch(job: data_parallel.ReplicaJob, job_path: Path) -> data_parallel.Launch:
    """dist_sync: tools/launch.py's local launcher, a scheduler, a server and N workers, one command,
    roles by DMLC_ROLE. local: one process that runs the N contexts one after another, each operator
    on all its threads. A process that fails ends the others (which wait for it in a push); a hang
    ends in the workers' step watchdog (DataParallelTrainer.step), and the launcher bounds everything."""
    replica = data_parallel.python_module(REPLICA_MODULE, str(job_path))
    kind = backend.resolve_device(job.config.device).device_type
    if job.engine == "local":
        return data_parallel.Launch([replica], ["local"], [f"{kind}({i})" for i in range(job.replicas)], replica_env(1))
    roles = {"scheduler": "scheduler", "server": "server", **{f"worker{i}": "worker" for i in range(job.replicas)}}
    # The launcher gives every process one environment, so each command sets its role with env(1).
    # ps-lite numbers the workers itself (by address): worker<i> is the launch order, and each
    # worker's log starts with its kvstore rank.
    commands = [["env", f"DMLC_ROLE={role}", *replica] for role in roles.values()]
    env = replica_env(job.replicas)
    env.update(
        DMLC_PS_ROOT_URI=data_parallel.LOOPBACK, DMLC_PS_ROOT_PORT=str(data_parallel.free_port()), DMLC_NUM_SERVER="1",
        DMLC_NUM_WORKER=str(job.replicas),
        # Each node listens on, and tells the others, this address; without it ps-lite takes the
        # first non-loopback interface's.
        DMLC_NODE_HOST=data_parallel.LOOPBACK,
    )
    return data_parallel.Launch(commands, list(roles), [f"{kind}(0) in worker{i}" for i in range(job.replicas)], env)


# Launch the job's engine on this machine, bounded by job.timeout, and collect what the replicas wrote.
train_data_parallel = data_parallel.launcher(ENGINES, replica_launch)


def run_replica(job: data_parallel.ReplicaJob) -> None:
    """A dist_sync worker or the local engine's process: join the kvstore, train, write the results."""
    device = backend.resolve_device(job.config.device)
    if job.engine == "dist_sync":
        kvstore = mx.kv.create("dist_sync")
        contexts, rank, first_shard, shard_count = [device], kvstore.rank, kvstore.rank, kvstore.num_workers
    else:
        kvstore = mx.kv.create("local")
        contexts, rank, first_shard, shard_count = [mx.Context(device.device_type, i) for i in range(job.replicas)], 0, 0, job.replicas
    if shard_count != job.replicas:
        raise RuntimeError(f"the kvstore has {shard_count} workers but the job asks for {job.replicas} replicas")
    print(f"{kvstore.type}: rank {rank}, shards {first_shard}..{first_shard + len(contexts) - 1} of {shard_count}", flush=True)
    model = backend.build(job.config.variant, job.config.device)
    model.collect_params().reset_ctx(contexts)  # one copy of the parameters per context
    fresh_state = Path(job.out) / f"replica{rank}_fresh_optimizer.states"
    trainer_class = data_parallel.replica_trainer_class(job, DataParallelTrainer)
    group = KVStoreGroup(kvstore, contexts, first_shard, shard_count, fresh_state, job.timeout, trainer_class)
    data_parallel.train_replica(backend, job, rank, model, group.make_trainer)
    # The local engine's contexts are its replicas: the harness compares their copies with context 0's.
    for shard_rank, context in enumerate(contexts[1:], first_shard + 1):
        save_weights(weights_on(model, context), data_parallel.replica_weights_path(job.out, shard_rank))


def main(argv: list[str]) -> None:
    """python -m frameworks.mxnet.distributed REPLICA_JOB_JSON: a dist_sync worker or the local engine.

    A dist_sync scheduler or server never gets here: frameworks.mxnet imports mxnet before this
    module runs, and that import runs the DMLC_ROLE's loop until the workers finish, then exits.
    """
    try:
        run_replica(data_parallel.ReplicaJob.load(argv[0]))
    except BaseException:
        # Exit now, skipping the dist kvstore's exit barrier: the other workers wait in a push for
        # this one, so the barrier would hang until the timeout instead of naming this worker.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Data-parallel LeNet training with PyTorch's own engine: DistributedDataParallel, launched by torchrun.

One process per replica. torchrun starts them and hands each its RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; the replica joins the process group through env:// (gloo on the CPU,
NCCL on GPUs, one GPU per replica), wraps the model in DistributedDataParallel, and DDP all-reduces
the gradients during backward. On this machine the launcher runs, on the loopback address:

    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --rdzv-backend c10d \\
        --rdzv-endpoint 127.0.0.1:PORT --local-addr 127.0.0.1 \\
        --module frameworks.pytorch.distributed OUT/replica-job.json

Across machines, run the same torchrun on every host, with the total replica count in the job
(job.replicas = nnodes x nproc-per-node), the job file, the data and the initial weights at the
same paths everywhere, and job.out on a shared folder (every rank writes its weights there).
With two hosts of two replicas each, the first at 10.0.0.1:

    host 0: python -m torch.distributed.run --nnodes 2 --node-rank 0 --nproc-per-node 2 \\
                --rdzv-backend c10d --rdzv-endpoint 10.0.0.1:29400 --rdzv-id lenet \\
                --module frameworks.pytorch.distributed job.json
    host 1: the same with --node-rank 1

Set the variables train_data_parallel sets here (replica_env) in each host's environment before
torchrun: OMP_NUM_THREADS to the host's cores / nproc-per-node (torchrun's default is 1),
OMP_PROC_BIND=false (the backend otherwise pins every replica's first thread to the same core),
and GLOO_SOCKET_IFNAME (or NCCL_SOCKET_IFNAME) to the network interface the hosts share.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from common import data_parallel
from common.data_parallel import ReplicaFailed, ReplicaJob
from common.interface import DeviceUnavailable
from frameworks import pytorch
from frameworks.pytorch.train import Trainer

ENGINES = {
    "ddp": "torch.distributed DistributedDataParallel, one process per replica launched by torchrun "
    "(gloo on the CPU, NCCL on GPUs), gradients all-reduced by DDP during backward",
}
DEFAULT_ENGINE = "ddp"
REPLICA_MODULE = "frameworks.pytorch.distributed"
# Gloo and NCCL otherwise pick the interface the host name resolves to; the local run stays on loopback.
LOOPBACK_INTERFACES = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
PR_SET_PDEATHSIG = 1  # from linux/prctl.h
# torchrun's failure summary: "Root Cause (first observed failure): ... rank : 1 (local_rank: 1)".
ROOT_CAUSE_RANK = re.compile(r"Root Cause.*?\brank\s*:\s*(\d+)", re.DOTALL)


class DataParallelTrainer(Trainer):
    """The backend's Trainer (uint8 training set on the device, batches gathered there, the optimizer
    from the config, its update) around a DistributedDataParallel model. step() takes the GLOBAL
    batch's indices, updates from this replica's shard, and DDP all-reduces the gradients during
    backward, so every replica applies the same update. The running totals hold the global batch's,
    so the inherited epoch_totals() returns the global epoch's on every replica."""

    def __init__(self, model: DistributedDataParallel, data, config):
        super().__init__(model, data, config)
        self.replicas, self.rank = dist.get_world_size(), dist.get_rank()

    def reduce(self, loss_sum: torch.Tensor, examples: int, global_batch_size: int) -> torch.Tensor:
        # DDP divides the all-reduced gradients by the world size N: it averages the replicas'
        # gradients with equal weights. Averaging each shard's MEAN loss that way weighs an example
        # of a 42-example shard more than one of a 43-example shard (128 over 3 replicas). Scaling
        # shard r's loss SUM S_r by N / B instead gives (1/N) * sum_r (N / B) * S_r = sum_r S_r / B:
        # the gradient of the global batch's mean loss, however unevenly the B examples split.
        return loss_sum * (self.replicas / global_batch_size)

    def step(self, global_batch_indices: np.ndarray) -> torch.Tensor:
        # An empty shard's summed loss is 0, still differentiable: the replica joins DDP's all-reduce.
        shard_loss_sum, shard_correct = self.update(data_parallel.shard(global_batch_indices, self.replicas, self.rank), len(global_batch_indices))
        # The engine's own collective for the reported totals only (the gradients went through DDP).
        global_totals = torch.stack([shard_loss_sum, shard_correct.to(shard_loss_sum.dtype)])
        dist.all_reduce(global_totals)
        self.loss_sum += global_totals[0]
        self.correct += global_totals[1].round().long()
        return global_totals[0] / len(global_batch_indices)


def replica_devices(job: ReplicaJob) -> list[str]:
    """The device of each replica: the CPU for all, or GPU r for replica r (NCCL needs one GPU per replica)."""
    if pytorch.resolve_device(job.config.device).type == "cuda":
        if torch.cuda.device_count() < job.replicas:
            raise DeviceUnavailable(
                f"{job.replicas} GPU replicas need {job.replicas} GPUs (NCCL runs one replica per GPU); "
                f"PyTorch sees {torch.cuda.device_count()}. Use fewer replicas or device='cpu'."
            )
        return [f"cuda:{rank}" for rank in range(job.replicas)]
    return ["cpu"] * job.replicas


def replica_env(replicas: int) -> dict[str, str]:
    """This process's environment plus the replicas' thread and network settings, read when torch loads."""
    env = {**os.environ, **data_parallel.thread_env(replicas)}
    # tune_process pins PyTorch's OpenMP threads (OMP_PROC_BIND=true) and this process has it set;
    # pinned, every replica binds its first thread to the first core, so N replicas share one core.
    env["OMP_PROC_BIND"] = "false"
    env.update({name: value for name, value in LOOPBACK_INTERFACES.items() if name not in os.environ})
    return env


def torchrun(job: ReplicaJob, job_path: Path) -> data_parallel.Launch:
    """One torchrun on this machine, which starts the job's replicas on the loopback address."""
    out = Path(job.out)
    command = data_parallel.python_module(
        "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(job.replicas),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{data_parallel.LOOPBACK}:{data_parallel.free_port()}",
        "--local-addr", data_parallel.LOOPBACK, "--rdzv-conf", f"join_timeout={job.timeout:.0f}", "--max-restarts", "0",
        "--log-dir", str(out / "logs" / "torchrun"),  # its error files, instead of a new /tmp folder per run
        "--module", REPLICA_MODULE, str(job_path),
    )
    return data_parallel.Launch([command], ["torchrun"], replica_devices(job), replica_env(job.replicas), processes=job.replicas)


launch_torchrun = data_parallel.launcher(ENGINES, torchrun)


def train_data_parallel(job: ReplicaJob) -> dict:
    """Launch job.replicas DDP replicas with torchrun on this machine and collect what they wrote."""
    try:
        return launch_torchrun(job)
    except ReplicaFailed as failure:
        # run_processes sees one process, torchrun; its summary names the replica that failed
        # first, which a long traceback can push out of the stderr tail.
        log = Path(job.out) / "logs" / "torchrun.log"
        root_cause = ROOT_CAUSE_RANK.search(log.read_text(errors="replace")) if log.exists() else None
        if root_cause is None:
            raise
        raise ReplicaFailed(f"replica rank {root_cause[1]} failed first; {failure}") from failure


def end_with_launcher() -> None:
    """torchrun starts each replica in its own session, so ending torchrun's process group (as
    run_processes does on a timeout) would not reach the replicas, which would wait in a collective
    until its timeout. Ask Linux to end this replica when its parent, the torchrun agent, ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@record  # torchrun's failure summary then shows the failing rank's traceback
def main(argv: list[str]) -> None:
    """One replica, started by torchrun: python -m frameworks.pytorch.distributed REPLICA_JOB_JSON."""
    end_with_launcher()
    job = ReplicaJob.load(argv[0])
    local_rank = int(os.environ["LOCAL_RANK"])
    on_gpu = pytorch.resolve_device(job.config.device).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(local_rank)  # build() then places the model on this replica's GPU
    dist.init_process_group(
        "nccl" if on_gpu else "gloo", init_method="env://", timeout=datetime.timedelta(seconds=job.timeout)
    )
    try:
        if dist.get_world_size() != job.replicas:
            raise RuntimeError(f"torchrun started {dist.get_world_size()} replicas but the job asks for {job.replicas}")
        model = pytorch.build(job.config.variant, job.config.device)
        # DDP on the CPU takes no device_ids. One wrapper serves both trainers train_replica makes:
        # each wrapper registers its own gradient hooks on the parameters.
        ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if on_gpu else None)
        trainer_class = data_parallel.replica_trainer_class(job, DataParallelTrainer)
        data_parallel.train_replica(pytorch, job, dist.get_rank(), model, lambda _model, data, config: trainer_class(ddp_model, data, config))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

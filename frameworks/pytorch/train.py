"""Forward, loss, gradients, the optimizer and the training step in PyTorch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common import interface
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.pytorch.convert import canonical_params
from frameworks.pytorch.model import model_device


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy on raw logits, SUMMED over the batch: F.cross_entropy applies
    log-softmax itself, and reduction="sum" leaves the division to the caller, who knows how many
    examples the update is over (a data-parallel replica holds only a shard of the global batch)."""
    return F.cross_entropy(logits, labels, reduction="sum")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The batch's mean softmax cross-entropy: its summed loss over its count (F.cross_entropy's
    default reduction="mean" computes the same)."""
    return summed_cross_entropy(logits, labels) / len(labels)


def _logits(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    model.eval()  # dropout off; the modern variant's only train/eval difference
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(model_device(model)))


@torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks tensor versions)
def forward(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return _logits(model, x).cpu().numpy()


def loss_and_grads(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    model.zero_grad(set_to_none=True)
    labels = torch.from_numpy(np.asarray(y, np.int64)).to(model_device(model))
    loss = cross_entropy(_logits(model, x), labels)
    loss.backward()
    return float(loss.detach()), {key: param.grad.cpu().numpy() for key, param in canonical_params(model).items()}


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Every hyperparameter from the config. PyTorch's Adam adds eps after the bias correction."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0, weight_decay=0.0)
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=0.0
    )


class Trainer(interface.Trainer):
    """The training set lives on the model's device as uint8; each step gathers and scales a batch.

    The step's two documented hooks, which a subclass replaces (data parallelism, and the mistakes
    frameworks/pytorch/pitfalls.py measures): `loss`, the batch's SUMMED loss, and `reduce`, what
    backward() differentiates from that sum.
    """

    loss = staticmethod(summed_cross_entropy)

    def __init__(self, model: torch.nn.Module, data, config: TrainConfig):
        self.model = model
        torch.manual_seed(config.seed)  # dropout masks (modern variant) come from torch's global generator
        device = model_device(model)
        self.images = torch.from_numpy(data.train_images).to(device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.optimizer = make_optimizer(model, config)
        # Running totals stay on the device: reading them every step would wait on it every step.
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def batch(self, batch_indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The canonical float32 N,1,H,W batch in [0, 1] and its labels, gathered on the device."""
        index = torch.from_numpy(batch_indices).to(self.images.device)
        return self.images[index].unsqueeze(1).float().div_(255), self.labels[index]

    def reduce(self, loss_sum: torch.Tensor, examples: int, global_batch_size: int) -> torch.Tensor:
        """What backward() differentiates: the summed loss of `examples` examples over the global
        batch size, so the gradient is that of the global batch's mean loss."""
        return loss_sum / global_batch_size

    def update(self, batch_indices: np.ndarray, global_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step from these examples, part of a global batch of global_batch_size
        (all of it on one device). Returns their summed loss and correct count, on the device."""
        x, y = self.batch(batch_indices)
        self.model.train()
        logits = self.model(x)
        loss_sum = self.loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.reduce(loss_sum, len(y), global_batch_size).backward()
        self.optimizer.step()
        return loss_sum.detach(), (logits.detach().argmax(dim=1) == y).sum()

    def step(self, batch_indices: np.ndarray) -> torch.Tensor:
        loss_sum, correct = self.update(batch_indices, len(batch_indices))
        self.loss_sum += loss_sum
        self.correct += correct
        return loss_sum / len(batch_indices)

    def epoch_totals(self) -> tuple[float, int]:
        totals = float(self.loss_sum), int(self.correct)
        self.loss_sum.zero_()
        self.correct.zero_()
        return totals

"""Forward, gradients, evaluation and the training step in PyTorch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common import training
from common.interface import TrainConfig
from common.weights import Weights


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _logits(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    model.eval()  # dropout off; the modern variant's only train/eval difference
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(_device(model)))


@torch.no_grad()
def forward(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return _logits(model, x).cpu().numpy()


def loss_and_grads(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    model.zero_grad(set_to_none=True)
    labels = torch.from_numpy(np.asarray(y, np.int64)).to(_device(model))
    loss = F.cross_entropy(_logits(model, x), labels)  # mean over the batch by default
    loss.backward()
    return float(loss.detach()), {key: p.grad.cpu().numpy() for key, p in model.named_parameters()}


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return training.evaluate_with(lambda chunk: forward(model, chunk), x, y)


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.0, weight_decay=0.0)
    return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=0.0)


class Trainer:
    """The training set lives on the model's device as uint8; each step gathers and scales a batch."""

    def __init__(self, model: torch.nn.Module, data, config: TrainConfig):
        self.model = model
        torch.manual_seed(config.seed)  # dropout masks (modern variant) come from torch's global generator
        device = _device(model)
        self.images = torch.from_numpy(data.train_images).to(device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.optimizer = make_optimizer(model.parameters(), config)
        # Running totals stay on the device: reading them every step would wait on it every step.
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def step(self, batch_indices: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(batch_indices).to(self.images.device)
        x = self.images[index].unsqueeze(1).float().div_(255)
        y = self.labels[index]
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss = loss.detach()
        self.loss_sum += loss * len(batch_indices)
        self.correct += (logits.detach().argmax(dim=1) == y).sum()
        return loss

    def epoch_totals(self) -> tuple[float, int]:
        totals = float(self.loss_sum), int(self.correct)
        self.loss_sum.zero_()
        self.correct.zero_()
        return totals


def make_trainer(model: torch.nn.Module, data, config: TrainConfig) -> Trainer:
    return Trainer(model, data, config)


def train(model: torch.nn.Module, data, config: TrainConfig, on_epoch=None, on_batch=None) -> list[dict]:
    return training.fit(make_trainer(model, data, config), lambda x, y: evaluate(model, x, y), data, config, on_epoch, on_batch)

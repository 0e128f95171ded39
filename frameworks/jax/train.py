"""Forward, loss, gradients, the optimizer and the training step in JAX (Flax NNX + optax)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common import interface
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.jax.convert import to_canonical
from frameworks.jax.model import LeNet, model_device, to_nhwc


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy on raw logits, one value per example, as optax's losses are."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The batch's mean softmax cross-entropy: its summed loss over its count."""
    return jnp.sum(per_example_cross_entropy(logits, labels)) / labels.shape[0]


def mean_over_real_examples(losses: jax.Array, weight: jax.Array) -> jax.Array:
    """What the step differentiates (Trainer.objective): the summed loss of the real examples
    (weight 1; 0 for a data-parallel batch's padding) over their count, the GLOBAL batch size.

    Under jit over a sharded batch (frameworks/jax/distributed.py) each device holds one shard,
    padded to a common length, and jit derives the all-reduce of this sum over the devices itself:
    every example weighs 1/B, on whichever device it sits, so the gradient is exactly the global
    mean's. Per-device means averaged over devices (what lax.pmean of local means does) would give
    the 42 examples of a 43/43/42 split more weight each; a plain .mean() would count the padding.
    """
    return jnp.sum(weight * losses) / jnp.sum(weight)


def _loss(model: LeNet, x: jax.Array, y: jax.Array):
    """The batch's mean loss, and the logits (for the accuracy)."""
    logits = model(x)
    return cross_entropy(logits, y), logits


# nnx.jit is the simple way to compile a function of a module; fine for calls made a few times
# per epoch. The per-batch training step below uses plain jax.jit instead (see _train_step).
@nnx.jit
def _logits(model: LeNet, x_nchw: jax.Array) -> jax.Array:
    return model(to_nhwc(x_nchw))  # built with dropout off: eval mode


@nnx.jit
def _loss_and_grads(model: LeNet, x_nchw: jax.Array, y: jax.Array):
    (loss, _), grads = nnx.value_and_grad(_loss, has_aux=True)(model, to_nhwc(x_nchw), y)
    return loss, grads


def forward(model: LeNet, x: np.ndarray) -> np.ndarray:
    return np.asarray(_logits(model, jax.device_put(np.asarray(x, np.float32), model_device(model))))


def loss_and_grads(model: LeNet, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    device = model_device(model)
    loss, grads = _loss_and_grads(model, jax.device_put(np.asarray(x, np.float32), device), jax.device_put(np.asarray(y, np.int32), device))
    return float(loss), to_canonical(grads)


def make_optimizer(model: LeNet, config: TrainConfig) -> nnx.Optimizer:
    """Every hyperparameter spelled out; optax's Adam adds eps outside the square root (eps_root=0), as PyTorch does."""
    return nnx.Optimizer(model, _optimizer(config.optimizer, config.lr, config.beta1, config.beta2, config.eps), wrt=nnx.Param)


# One transformation object per set of hyperparameters. The optimizer is part of the jitted step's
# static graph definition, compared by identity: a fresh optax.sgd(...) for every Trainer would
# recompile the step (about a second) each time.
@functools.cache
def _optimizer(name: str, lr: float, beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr, momentum=None, nesterov=False)
    return optax.adam(lr, b1=beta1, b2=beta2, eps=eps, eps_root=0.0)


def train_step(objective, graphdef, state, totals, images, labels, batch_indices, weight):
    """The training step, one for a device and for data parallelism (which jits it over a sharded
    batch). objective(per-example losses, weight) is what is differentiated (Trainer.objective);
    weight is 1 for a real example and 0 for padding, or None for a batch with no padding.
    Returns the new state, the running (loss sum, correct) totals and the batch's mean loss."""
    model, optimizer = nnx.merge(graphdef, state)
    x = images[batch_indices].astype(jnp.float32) / 255  # as common.data.scale_images
    y = labels[batch_indices]
    weight = jnp.ones(batch_indices.shape, jnp.float32) if weight is None else weight

    def loss(model: LeNet):
        logits = model(x)
        losses = per_example_cross_entropy(logits, y)
        return objective(losses, weight), (logits, losses)

    (_, (logits, losses)), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    optimizer.update(model, grads)
    loss_sum, correct = totals
    batch_loss_sum = jnp.sum(weight * losses)
    correct_here = (logits.argmax(axis=1) == y) & (weight > 0)
    totals = (loss_sum + batch_loss_sum, correct + jnp.sum(correct_here, dtype=correct.dtype))
    # Reported: the batch's mean loss, whatever the objective differentiated.
    return nnx.state((model, optimizer)), totals, batch_loss_sum / jnp.sum(weight)


# Flax's "functional training loop": split the module and optimizer into a static graph
# definition and a pytree of arrays, and jit a pure function of the arrays. nnx.jit would walk
# the Python object graph on every call, which costs more than this small model's whole step on a
# CPU. The objective and the graph definition are static; the state and running totals are
# donated: XLA updates their buffers in place.
_train_step = jax.jit(train_step, static_argnums=(0, 1), donate_argnums=(2, 3))


class Trainer(interface.Trainer):
    """The training set lives on the model's device as uint8 N,H,W,C; each step gathers and scales a batch.

    The trainer works on its own copy of the model's arrays (the step donates them); sync_model
    writes the current weights back into the model. `objective`, what the step differentiates from
    the per-example losses, is the step's documented hook, which frameworks/jax/pitfalls.py replaces.
    """

    objective = staticmethod(mean_over_real_examples)

    def __init__(self, model: LeNet, data, config: TrainConfig):
        self.model = model
        self.device = model_device(model)
        # A copy with dropout switched on (the classic variant has none to switch).
        train_model = nnx.view(nnx.clone(model), deterministic=False, raise_if_not_found=False)
        nnx.reseed(train_model, dropout=config.seed)  # dropout masks come from config.seed, nothing else
        optimizer = make_optimizer(train_model, config)
        self.graphdef, state = nnx.split((train_model, optimizer))
        # Own buffers, so donating them leaves `model` intact; all committed to the model's device, as
        # the step's outputs are, so the second step does not compile again for other placements.
        self.state = jax.device_put(jax.tree.map(jnp.copy, state), self.device)
        self.images = jax.device_put(to_nhwc(data.train_images[:, None]), self.device)
        self.labels = jax.device_put(data.train_labels.astype(np.int32), self.device)
        # Running totals stay on the device: reading them every step would wait on it every step.
        self.totals = self.zero_totals()

    def zero_totals(self):
        return jax.device_put((np.float32(0), np.int32(0)), self.device)

    def step(self, batch_indices: np.ndarray) -> jax.Array:
        self.state, self.totals, loss = _train_step(
            self.objective, self.graphdef, self.state, self.totals, self.images, self.labels, batch_indices.astype(np.int32), None
        )
        return loss

    def epoch_totals(self) -> tuple[float, int]:
        loss_sum, correct = jax.device_get(self.totals)
        self.totals = self.zero_totals()
        return float(loss_sum), int(correct)

    def sync_model(self) -> None:
        # Copies: the next step donates (reuses) the trainer's buffers.
        nnx.update(self.model, jax.tree.map(jnp.copy, nnx.filter_state(self.state[0], nnx.Param)))

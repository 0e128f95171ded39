"""Forward, loss, gradients, the optimizer and the training step in Keras on TensorFlow."""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from common import interface
from common.interface import TrainConfig
from common.weights import Weights
from frameworks.tensorflow.convert import to_canonical
from frameworks.tensorflow.model import model_device, to_nhwc

# Softmax cross-entropy with integer labels. from_logits=True because the network ends in fc3's
# raw logits (Keras's default, False, expects probabilities). reduction="sum" leaves the division
# to the step, which knows the global batch size: Keras's default ("sum_over_batch_size") divides
# by this batch's size, and under a tf.distribute strategy also by the number of replicas.
_SUMMED_SPARSE_CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")


def summed_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The batch's softmax cross-entropy, summed over its examples."""
    return _SUMMED_SPARSE_CROSS_ENTROPY(labels, logits)  # Keras losses take (y_true, y_pred): labels first


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The batch's mean: its summed loss over its count."""
    return summed_cross_entropy(logits, labels) / tf.cast(tf.size(labels), tf.float32)

# Pixel value -> float32 in [0, 1]. TensorFlow's graph optimizer (and XLA) rewrite x / 255 as
# x * (1/255), which is one ulp off for 126 of the 256 values; looking the quotients up in a
# table divided once by NumPy keeps every input bit-identical to common.data.scale_images.
PIXEL_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)


def _logits(model: keras.Model, x: np.ndarray) -> tf.Tensor:
    return model(tf.constant(to_nhwc(np.asarray(x, np.float32))), training=False)  # dropout off


# Inference through a tf.function: called eagerly, a Keras model dispatches each layer's ops one by
# one from Python, which made evaluating the test set slower than training on it. One graph per
# model, traced once for any batch length; the weights are its captured variables, so
# set_weights needs no retrace.
_PREDICT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict(model: keras.Model):
    if model not in _PREDICT:
        _PREDICT[model] = tf.function(
            lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)],
        )
    return _PREDICT[model]


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    with tf.device(model_device(model)):
        return _predict(model)(tf.constant(to_nhwc(np.asarray(x, np.float32)))).numpy()


def loss_and_grads(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    variables = model.trainable_variables
    with tf.device(model_device(model)):
        with tf.GradientTape() as tape:
            loss = cross_entropy(_logits(model, x), tf.constant(y, tf.int32))
        grads = tape.gradient(loss, variables)
    return float(loss), to_canonical(model, {v.path: g.numpy() for v, g in zip(variables, grads)})


def make_optimizer(model: keras.Model, config: TrainConfig) -> keras.optimizers.Optimizer:
    """Every hyperparameter from the config: Keras's defaults differ from the other frameworks'.

    Keras's Adam epsilon defaults to 1e-7 (PyTorch, optax, MXNet: 1e-8). Keras also adds epsilon
    to sqrt(v) before the bias correction (the Adam paper's "epsilon hat"), PyTorch after it, so
    the same eps weighs sqrt(1 - beta2**t) times less in PyTorch: a difference only where
    sqrt(v) is as small as eps (measured: per-epoch Adam losses within 1e-4 of PyTorch's).
    """
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=config.lr, momentum=0.0, nesterov=False, weight_decay=None)
    else:
        optimizer = keras.optimizers.Adam(
            learning_rate=config.lr, beta_1=config.beta1, beta_2=config.beta2, epsilon=config.eps, amsgrad=False,
            weight_decay=None,
        )
    optimizer.build(model.trainable_variables)
    return optimizer


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Restart every dropout layer's random stream at `seed`, so equal configs give equal runs.

    Keras dropout draws its masks from the layer's own SeedGenerator, a [seed, counter] variable.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.seed_generator.state.assign([seed, 0])


def pack_pixels(images: np.ndarray) -> tf.Tensor:
    """uint8 images (N, H, W, C) as int32 words of 4 pixels each: the same bytes, reinterpreted.

    TensorFlow has no GPU kernel to gather uint8 rows (it would silently gather on the CPU),
    but has one for int32.
    """
    return tf.bitcast(tf.constant(images.reshape(len(images), -1, 4)), tf.int32)


def unpack_pixels(words: tf.Tensor, image_shape) -> tf.Tensor:
    return tf.reshape(tf.bitcast(words, tf.uint8), (-1, *image_shape))


class Trainer(interface.Trainer):
    """The training set lives on the model's device as uint8 NHWC; each step gathers and scales a batch.

    The step's two documented hooks, which a subclass replaces (data parallelism, and the mistakes
    frameworks/tensorflow/pitfalls.py measures): `loss`, the batch's SUMMED loss, and `reduce`, what
    the tape differentiates from that sum.
    """

    loss = staticmethod(summed_cross_entropy)

    def __init__(self, model: keras.Model, data, config: TrainConfig):
        self.model = model
        self.variables = model.trainable_variables
        self.device = model_device(model)
        seed_dropout(model, config.seed)
        with tf.device(self.device):
            images = to_nhwc(data.train_images[:, None])
            self.image_shape = images.shape[1:]
            self.images = pack_pixels(images)
            self.labels = tf.constant(data.train_labels, tf.int32)
            self.pixel_values = tf.constant(PIXEL_VALUES)
            self.optimizer = make_optimizer(model, config)
            # Running totals stay on the device: reading them every step would wait on it every step.
            self.loss_sum = tf.Variable(0.0)
            self.correct = tf.Variable(0, dtype=tf.int64)
        # A [None] signature traces once for every batch length (128, and the last 96). No XLA
        # (jit_compile): on CPU it ran slower than TensorFlow's oneDNN kernels (README, "Speed").
        self._step = tf.function(self._train_step, input_signature=[tf.TensorSpec([None], tf.int64)])

    def gather_batch(self, batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The float32 NHWC images and int32 labels of these examples (data-parallel trainers reuse it)."""
        pixels = unpack_pixels(tf.gather(self.images, batch_indices), self.image_shape)
        return tf.gather(self.pixel_values, tf.cast(pixels, tf.int32)), tf.gather(self.labels, batch_indices)

    def reduce(self, loss_sum: tf.Tensor, examples: tf.Tensor, global_batch_size: tf.Tensor) -> tf.Tensor:
        """What the tape differentiates: the summed loss of `examples` examples over the global batch
        size (tf.nn.compute_average_loss(per_example_losses, global_batch_size) computes the same),
        so the gradient is that of the global batch's mean loss."""
        return tf.math.divide_no_nan(loss_sum, tf.cast(global_batch_size, loss_sum.dtype))

    def update(self, batch_indices: tf.Tensor, global_batch_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One optimizer step from these examples, part of a global batch of global_batch_size (all of
        it on one device), traced into the step. Returns their summed loss and correct count (float32)."""
        x, y = self.gather_batch(batch_indices)
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss_sum = self.loss(logits, y)
            differentiated = self.reduce(loss_sum, tf.size(y), global_batch_size)
        self.optimizer.apply(tape.gradient(differentiated, self.variables), self.variables)
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=tf.int32) == y, tf.float32))
        return loss_sum, correct

    def _train_step(self, batch_indices: tf.Tensor) -> tf.Tensor:
        with tf.device(self.device):  # recorded in the traced graph, so every step runs there
            batch_size = tf.size(batch_indices)
            loss_sum, correct = self.update(batch_indices, batch_size)
            self.loss_sum.assign_add(loss_sum)
            self.correct.assign_add(tf.cast(correct, tf.int64))
            return loss_sum / tf.cast(batch_size, tf.float32)

    def step(self, batch_indices: np.ndarray) -> tf.Tensor:
        return self._step(batch_indices)

    def epoch_totals(self) -> tuple[float, int]:
        totals = float(self.loss_sum.numpy()), int(self.correct.numpy())
        self.loss_sum.assign(0.0)
        self.correct.assign(0)
        return totals

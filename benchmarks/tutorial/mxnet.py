"""The d2l Gluon way: a hybridized net, NDArray batches from NumPy, trainer.step, asscalar every batch."""

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from common.data import scale_images


def train_epoch(model, data, config, max_batches=None) -> int:
    context = model.collect_params().list_ctx()[0]
    trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": config.lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    model.hybridize()
    order = np.random.default_rng(config.seed).permutation(len(data.train_labels))
    seen = 0
    for batch, start in enumerate(range(0, len(order), config.batch_size)):
        if batch == max_batches:
            break
        indices = order[start : start + config.batch_size]
        x = mx.nd.array(scale_images(data.train_images[indices]), ctx=context)
        y = mx.nd.array(data.train_labels[indices], ctx=context)
        with autograd.record():
            loss = loss_fn(model(x), y)
        loss.backward()
        trainer.step(len(indices))
        loss.mean().asscalar()
        seen += len(indices)
    return seen

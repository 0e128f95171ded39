"""The d2l Gluon way: a hybridized net, NDArray batches from NumPy, trainer.step, asscalar every batch."""

import mxnet as mx
from mxnet import autograd, gluon

from common.data import batch_order, scale_images


def train_epoch(model, data, config, max_batches=None) -> None:
    context = model.collect_params().list_ctx()[0]
    trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": config.lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    model.hybridize()
    for indices in batch_order(len(data.train_labels), config.batch_size, config.seed, epoch=0)[:max_batches]:
        x = mx.nd.array(scale_images(data.train_images[indices]), ctx=context)
        y = mx.nd.array(data.train_labels[indices], ctx=context)
        with autograd.record():
            loss = loss_fn(model(x), y)
        loss.backward()
        trainer.step(len(indices))
        loss.mean().asscalar()

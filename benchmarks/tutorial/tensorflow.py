"""The d2l/Keras way: compile, then model.fit on float NHWC arrays with Keras's own shuffling."""

import keras

from common.data import scale_images
from frameworks.tensorflow.model import to_nhwc


def train_epoch(model, data, config, max_batches=None) -> None:
    count = len(data.train_labels) if max_batches is None else max_batches * config.batch_size
    x, y = to_nhwc(scale_images(data.train_images[:count])), data.train_labels[:count]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=config.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=True, verbose=0)

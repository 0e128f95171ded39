"""One framework, one training loop, in its own process: `python -m benchmarks.measure FRAMEWORK LOOP OUT.json [IMAGES]`.

LOOP is "trainer" (the suite's Trainer through common.training.fit) or "tutorial" (the loop a
d2l reader writes, benchmarks/tutorial/<framework>.py). Warm-up (compilation, first batches)
is timed separately from the measured epoch, which covers IMAGES training images (default: all).
The process's runtime settings come from its environment (common/runtime.py; see train_speed.py).
"""

from __future__ import annotations

import importlib
import resource
import sys
import time

from common import runtime
from common.data import load_fashion_mnist
from common.files import write_json
from common.interface import TrainConfig
from common.training import fit, step_losses
from common.weights import init_weights
from frameworks import get_backend

WARMUP_BATCHES = 20


def measure(framework: str, loop: str, train_subset: int | None = None) -> dict:
    """One loop's warm-up and one measured epoch; train_subset shortens the epoch (the tests use it)."""
    backend = get_backend(framework)
    data = load_fashion_mnist(train_subset=train_subset, test_subset=0)
    config = TrainConfig(epochs=1)
    model = backend.build(config.variant, config.device)
    initial = init_weights(config.seed)
    backend.set_weights(model, initial)
    start = time.perf_counter()
    if loop == "trainer":
        trainer = backend.make_trainer(model, data, config)
        step_losses(trainer, data, config, WARMUP_BATCHES)
        warmup = time.perf_counter() - start
        seconds = fit(trainer, lambda x, y: (0.0, 0.0), data, config)[0]["seconds"]
    else:
        tutorial = importlib.import_module(f"benchmarks.tutorial.{framework}")
        tutorial.train_epoch(model, data, config, max_batches=WARMUP_BATCHES)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        tutorial.train_epoch(model, data, config)
        seconds = time.perf_counter() - start
    images = len(data.train_labels)
    trained = backend.get_weights(model)
    return dict(
        framework=framework, loop=loop, version=backend.version(), images=images, warmup_seconds=warmup, epoch_seconds=seconds,
        images_per_second=images / seconds, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # How far training moved the weights: a loop that silently trained nothing would show 0.
        settings=list(runtime.ACTIVE),  # the common/runtime.py settings this process ran with
        weight_change=max(float(abs(trained[name] - initial[name]).max()) for name in initial),
    )


if __name__ == "__main__":
    framework, loop, out = sys.argv[1:4]
    write_json(out, measure(framework, loop, train_subset=int(sys.argv[4]) if len(sys.argv) > 4 else None))

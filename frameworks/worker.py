"""One framework's part of a comparison, run in its own process: `python -m frameworks.worker JOB.json`.

It measures and writes; it judges nothing. The harness (common/harness.py) reads what every
worker wrote and runs the parity checks. Progress goes to stdout as JSON lines.

Phases: "run" builds, probes (shapes, weight round trip, forward, gradients, first steps),
trains from the shared initial weights and saves the trained weights; "crosseval" loads every
framework's trained weights and measures test accuracy with this framework.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from common.data import load_fashion_mnist, scale_images
from common.files import atomic_write, write_json
from common.interface import TrainConfig
from common.training import step_losses
from common.weights import load_weights, save_weights
from frameworks import get_backend


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def load_backend(job: dict):
    """A real backend by name, or (for the harness's own tests) any module given by path."""
    if job.get("module"):
        return importlib.import_module(job["module"])
    return get_backend(job["framework"])


def resolve_device(backend, device: str) -> str:
    if device == "auto":
        return "gpu" if "gpu" in backend.devices() else "cpu"
    return device


def run_phase(backend, job: dict, out: Path) -> dict:
    config = TrainConfig(**{**job["config"], "device": resolve_device(backend, job["config"]["device"])})
    data = load_fashion_mnist(job["data_dir"], train_subset=job["train_subset"], test_subset=job["test_subset"])
    initial = load_weights(job["initial_weights"])
    probe = np.load(job["probe"])

    model = backend.build(config.variant, config.device)
    rows = [row._asdict() for row in backend.layer_summary(model)]
    backend.set_weights(model, initial)
    arrays = {f"roundtrip/{k}": v for k, v in backend.get_weights(model).items()}
    arrays["logits"] = backend.forward(model, probe["x"])
    loss, grads = backend.loss_and_grads(model, probe["x"], probe["y"])
    arrays.update({f"grad/{k}": v for k, v in grads.items()})
    atomic_write(out / "probe_results.npz", lambda f: np.savez(f, **arrays))

    first_steps = []
    if job["steps"]:
        first_steps = step_losses(backend.make_trainer(model, data, config), data, config, job["steps"])
        backend.set_weights(model, initial)

    emit(event="start", epochs=config.epochs)
    history = backend.train(
        model, data, config,
        on_epoch=lambda entry: emit(event="epoch", **entry),
        on_batch=lambda done, total: (done % 20 == 0 or done == total) and emit(event="batch", done=done, total=total),
    )
    save_weights(backend.get_weights(model), out / "trained_weights.npz")
    return dict(
        device=config.device,
        layers=rows,
        params=backend.param_count(model),
        probe_loss=loss,
        step_losses=first_steps,
        history=history,
        final_test_accuracy=history[-1]["test_accuracy"],
    )


def crosseval_phase(backend, job: dict) -> dict:
    device = resolve_device(backend, job["config"]["device"])
    data = load_fashion_mnist(job["data_dir"], train_subset=0, test_subset=job["test_subset"])
    model = backend.build(job["config"]["variant"], device)
    x = scale_images(data.test_images)
    accuracy = {}
    for source, path in job["weights"].items():
        backend.set_weights(model, load_weights(path))
        accuracy[source] = backend.evaluate(model, x, data.test_labels)[1]
    return dict(accuracy=accuracy)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    out = Path(job["out"])
    result = dict(framework=job["framework"], phase=job["phase"], status="failed")
    start = time.perf_counter()
    try:
        backend = load_backend(job)
        result.update(version=backend.version(), devices=backend.devices(), python=platform.python_version())
        phase = run_phase(backend, job, out) if job["phase"] == "run" else crosseval_phase(backend, job)
        result.update(phase, status="ok")
    except Exception as err:  # reported to the harness, which marks this framework failed
        result.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    result["seconds"] = time.perf_counter() - start
    write_json(out / f"{job['phase']}.json", result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One framework's part of a comparison, run in its own process: `python -m frameworks.worker JOB.json`.

It measures and writes; it judges nothing. The harness (common/harness.py) reads what every
worker wrote and runs the parity checks. The job, the events and the files are common/protocol.py.

Phases: "run" builds, probes (shapes, weight round trip, forward, gradients, first steps),
trains from the shared initial weights, saves the trained weights and exports the trained model
to ONNX with the framework's own exporter (frameworks/<name>/export.py); "crosseval" loads every
framework's trained weights and measures test accuracy with this framework; "data_parallel"
trains on N replicas with the framework's own engine (frameworks/<name>/distributed.py);
"pitfalls" makes each mistake a user of the framework would make and measures what it costs
(frameworks/<name>/pitfalls.py).
"""

from __future__ import annotations

import platform
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from common import cpu, protocol, runtime
from common.data import load_fashion_mnist, scale_images
from common.data_parallel import ReplicaJob
from common.files import atomic_write, write_json
from common.onnx_judge import FRAMEWORKS_WITH_EXPORTER
from common.pitfalls import PitfallContext
from common.pitfalls import measure as measure_pitfalls
from common.protocol import Job
from common.training import step_losses
from common.weights import load_weights, save_weights
from frameworks import get_backend, get_part


def emit(**event) -> None:
    print(protocol.event_line(**event), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_phase(backend, job: Job) -> dict:
    config, out = job.config, Path(job.out)
    data = load_fashion_mnist(job.data_dir, train_subset=job.train_subset, test_subset=job.test_subset)
    initial = load_weights(job.initial_weights)
    probe = np.load(job.probe)

    model = backend.build(config.variant, config.device)
    rows = [row._asdict() for row in backend.layer_summary(model)]
    backend.set_weights(model, initial)
    arrays = {f"roundtrip/{k}": v for k, v in backend.get_weights(model).items()}
    arrays["logits"] = backend.forward(model, probe["x"])
    loss, grads = backend.loss_and_grads(model, probe["x"], probe["y"])
    arrays.update({f"grad/{k}": v for k, v in grads.items()})
    atomic_write(out / protocol.PROBE_RESULTS, lambda f: np.savez(f, **arrays))

    # Warm-up: building the trainer and its first step, where frameworks trace and compile.
    start = time.perf_counter()
    trainer = backend.make_trainer(model, data, config)
    first_steps = step_losses(trainer, data, config, max(job.steps, 1))[: job.steps]
    warmup = time.perf_counter() - start
    backend.set_weights(model, initial)

    emit(event="start", epochs=config.epochs)
    history = backend.train(
        model, data, config,
        on_epoch=lambda entry: emit(event="epoch", **entry),
        on_batch=lambda done, total: (done % 20 == 0 or done == total) and emit(event="batch", done=done, total=total),
    )
    save_weights(backend.get_weights(model), out / protocol.TRAINED_WEIGHTS)
    test_x = scale_images(data.test_images)
    start = time.perf_counter()
    backend.evaluate(model, test_x, data.test_labels)
    eval_seconds = time.perf_counter() - start
    exported = export_onnx(backend, model, job.onnx) if job.onnx else None  # after the timed evaluation: it loads an exporter
    seconds = sum(entry["seconds"] for entry in history)
    threads = runtime.threads_wanted()
    return dict(
        device=str(backend.resolve_device(config.device)),
        layers=rows,
        params=backend.param_count(model),
        probe_loss=loss,
        step_losses=first_steps,
        history=history,
        final_test_accuracy=history[-1]["test_accuracy"],
        data_source=data.source,
        speed=dict(
            train_images_per_second=len(data.train_labels) * len(history) / seconds,
            warmup_seconds=warmup,
            eval_images_per_second=len(test_x) / eval_seconds if eval_seconds else 0.0,
            peak_rss_mb=peak_rss_mb(),
            threads=threads,
            settings=list(runtime.ACTIVE),  # the common/runtime.py settings this process ran with
            fp32_peak=cpu.fp32_peak(threads=threads),
        ),
        **({"onnx": exported} if exported else {}),
    )


def export_onnx(backend, model, path: str) -> dict | None:
    """The trained model through the framework's own ONNX exporter (frameworks/<name>/export.py), in this
    process, where the framework is loaded already. A failure is recorded, never fatal: the run's training
    stands, and the harness's judge (common/onnx_judge.py) reports the export as failed, saying why.
    None for a backend without an exporter (the numpy oracle)."""
    if backend.name not in FRAMEWORKS_WITH_EXPORTER:
        return None
    start = time.perf_counter()
    try:
        exporter = get_part(backend.name, "export")
        path = Path(path)
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:  # the exporters write in place: rename when whole
            written = Path(folder) / path.name
            info = exporter.export_onnx(model, written)
            atomic_write(path, lambda f: f.write(written.read_bytes()))
        info.update(status="ok", path=str(path))
    except Exception as err:  # a missing package or an exporter error: say which, and go on
        info = dict(status="failed", error=f"{type(err).__name__}: {err}".strip()[:2000])
    info["seconds"] = time.perf_counter() - start
    return info


def crosseval_phase(backend, job: Job) -> dict:
    data = load_fashion_mnist(job.data_dir, train_subset=0, test_subset=job.test_subset)
    model = backend.build(job.config.variant, job.config.device)
    x = scale_images(data.test_images)
    accuracy = {}
    for source, path in job.weights.items():
        backend.set_weights(model, load_weights(path))
        accuracy[source] = backend.evaluate(model, x, data.test_labels)[1]
    return dict(accuracy=accuracy)


def data_parallel_phase(backend, job: Job) -> dict:
    distributed = get_part(backend.name, "distributed")
    replica_job = ReplicaJob(
        framework=backend.name, engine=job.engine or distributed.DEFAULT_ENGINE, replicas=job.replicas, config=job.config,
        initial_weights=job.initial_weights, out=job.out, steps=job.steps, data_dir=job.data_dir,
        train_subset=job.train_subset, test_subset=job.test_subset,
    )
    emit(event="start", epochs=job.config.epochs)
    return distributed.train_data_parallel(replica_job)


def pitfalls_phase(backend, job: Job) -> dict:
    """The mistakes, measured against this framework's own comparison run when it finished."""
    mistakes, distributed = get_part(backend.name, "pitfalls"), get_part(backend.name, "distributed")
    data = load_fashion_mnist(job.data_dir, train_subset=job.train_subset, test_subset=job.test_subset)
    trained = job.weights.get("trained")
    context = PitfallContext(
        data=data, config=job.config, initial=load_weights(job.initial_weights),
        trained=load_weights(trained) if trained else None, correct_history=job.history, first_steps=job.steps,
    )
    emit(event="start", epochs=1)
    return dict(pitfalls=measure_pitfalls(context, backend, mistakes, distributed.train_data_parallel))


PHASE_FUNCTIONS = {"run": run_phase, "crosseval": crosseval_phase, "data_parallel": data_parallel_phase, "pitfalls": pitfalls_phase}


def main(argv: list[str]) -> int:
    job = Job.load(argv[0])
    result = dict(framework=job.framework, phase=job.phase, status="failed")
    start = time.perf_counter()
    try:
        backend = get_backend(job.framework)
        result.update(version=backend.version(), devices=backend.devices(), python=platform.python_version())
        result.update(PHASE_FUNCTIONS[job.phase](backend, job), status="ok")
    except Exception as err:  # reported to the harness, which marks this framework failed
        result.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    except KeyboardInterrupt:  # the harness was interrupted; it marks the result partial
        result.update(error="interrupted")
    result["seconds"] = time.perf_counter() - start
    write_json(protocol.result_path(job.out, job.phase), result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the comparison harness and its worker processes exchange, defined once for both.

The harness writes a Job as JSON and starts `python -m frameworks.worker JOB.json` in the
framework's interpreter. The worker prints progress events as JSON lines on stdout and writes its
result and arrays into the job's folder, under the names below. Nothing else crosses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.files import write_json
from common.interface import TrainConfig

PROBE_RESULTS = "probe_results.npz"  # round-tripped weights, probe logits and gradients
TRAINED_WEIGHTS = "trained_weights.npz"
ONNX_MODEL = "model.onnx"  # <out>/<framework>/model.onnx: the first seed's trained model, by the framework's own exporter

# Progress events, one JSON object per line: {"event": "start", "epochs": E},
# {"event": "batch", "done": D, "total": T}, {"event": "epoch", **history entry}.
EVENTS = ("start", "batch", "epoch")


def job_path(out: str | Path, phase: str) -> Path:
    return Path(out) / f"{phase}-job.json"


def result_path(out: str | Path, phase: str) -> Path:
    return Path(out) / f"{phase}.json"


def stderr_path(out: str | Path, phase: str) -> Path:
    return Path(out) / f"{phase}-stderr.log"


@dataclass(frozen=True)
class Job:
    """One worker's assignment. config is the run's TrainConfig (device may be "auto")."""

    phase: str
    framework: str
    config: TrainConfig
    out: str
    data_dir: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    probe: str | None = None  # run: the fixed probe batch (.npz with x and y)
    initial_weights: str | None = None  # run, data_parallel
    steps: int = 0  # run, data_parallel, pitfalls: first steps whose losses are compared one by one
    weights: dict[str, str] = field(default_factory=dict)  # crosseval: source name -> trained weights; pitfalls: "trained"
    history: list[dict] | None = None  # pitfalls: this framework's comparison run, the correct run to compare with
    replicas: int = 1  # data_parallel
    engine: str | None = None  # data_parallel: None for the framework's default engine
    onnx: str | None = None  # run: where to write the trained model through the framework's ONNX exporter (first seed)

    def to_dict(self) -> dict:
        return {**asdict(self), "config": self.config.to_dict()}

    def save(self) -> Path:
        return write_json(job_path(self.out, self.phase), self.to_dict())

    @classmethod
    def from_dict(cls, fields: dict) -> Job:
        return cls(**{**fields, "config": TrainConfig(**fields["config"])})

    @classmethod
    def load(cls, path: str | Path) -> Job:
        return cls.from_dict(json.loads(Path(path).read_text()))


def event_line(**event) -> str:
    return json.dumps(event)


def parse_event(line: str) -> dict | None:
    """A progress event from a worker's stdout line; None for a framework's own chatter."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and event.get("event") in EVENTS else None

"""What a tuning run reports: written by `tune_network` into its work directory, read by
`bench` to rank databases, printed by the CLI."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int = 0
    best_ms: float | None = None
    flops: float = 0.0  # per call, as MetaSchedule estimates them: with best_ms, how close to peak
    selected_ms: float | None = None  # the chosen record re-timed with cold weights (see selection)
    selected_rank: int | None = None  # its place among the search's records, 0 the recorded best


@dataclass
class TuneReport:
    network: str
    target: str
    batch: int
    trials_budget: int
    lowering: dict
    measurement: str
    library: str
    tasks: list[TaskResult] = field(default_factory=list)
    # Whole-network latency of the library: median_ms, min_ms, max_ms, repeat. None where this
    # host cannot run it (remote devices, a CUDA build without a GPU).
    network_latency: dict | None = None
    # The library timed in turns with ONNX Runtime: onnxruntime_ms, tvm_ms, ratio, threads, runs.
    versus_onnxruntime: dict | None = None

    @property
    def latency_ms(self) -> float | None:
        return (self.network_latency or {}).get("median_ms")

    @property
    def ratio(self) -> float | None:
        """Latency over ONNX Runtime's, timed beside it: what ranks databases tuned on different days."""
        return (self.versus_onnxruntime or {}).get("ratio")

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TuneReport":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["tasks"] = [TaskResult(**t) for t in data.get("tasks", [])]
        return cls(**data)

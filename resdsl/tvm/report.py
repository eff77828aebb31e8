"""What a tuning run reports: written by `tune_network` into its work directory, read by
`bench` to rank databases, printed by the CLI."""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable


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
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: object) -> "TuneReport":
        """A report as `to_json` writes it, each field checked for type; fields it does not know
        (from a later resdsl) are left out. ValueError says what is wrong."""
        data = _typed(cls, data, "the report")
        data["tasks"] = [TaskResult(**_typed(TaskResult, t, f"task {i} of the report"))
                         for i, t in enumerate(data.get("tasks", []))]
        for key in ("network_latency", "versus_onnxruntime"):
            if data.get(key) is not None and not all(_number(v) for v in data[key].values()):
                raise ValueError(f"the report's {key} holds something other than numbers")
        return cls(**data)


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _text(value: object) -> bool:
    return isinstance(value, str)


# What each field may hold, and what to call that in a message.
_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (_text, "a string"), "network": (_text, "a string"), "target": (_text, "a string"),
    "library": (_text, "a string"),
    "weight": (_count, "a non-negative integer"), "trials": (_count, "a non-negative integer"),
    "trials_budget": (_count, "a non-negative integer"),
    "selected_rank": (lambda v: v is None or _count(v), "a non-negative integer or null"),
    "flops": (_number, "a finite, non-negative number"),
    "best_ms": (lambda v: v is None or _number(v), "a finite, non-negative number or null"),
    "selected_ms": (lambda v: v is None or _number(v), "a finite, non-negative number or null"),
    # The batch a build from these records is specialised to: the range the options allow.
    "batch": (lambda v: type(v) is int and 1 <= v <= 4096, "an integer from 1 to 4096"),
    "lowering": (lambda v: isinstance(v, dict), "an object"),
    "measurement": (lambda v: v in ("cold", "hot"), '"cold" or "hot"'),
    "tasks": (lambda v: isinstance(v, list), "a list"),
    "network_latency": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "versus_onnxruntime": (lambda v: v is None or isinstance(v, dict), "an object or null"),
}


def _typed(cls, data: object, what: str) -> dict:
    """`data`'s fields of dataclass `cls`, each checked; required ones present."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not an object")
    out = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{what} has no {f.name}")
            continue
        check, kind = _FIELDS[f.name]
        if not check(data[f.name]):
            raise ValueError(f"{what}'s {f.name} is not {kind}")
        out[f.name] = data[f.name]
    return out

"""How a tuning work directory times its candidates, kept beside its records."""
from __future__ import annotations

import json
from pathlib import Path

MEASUREMENT = "measurement.json"
RECORDS = "database_tuning_record.json"  # MetaSchedule's name; a directory with it has been tuned


def measurement(work_dir: Path, target) -> str:
    """How a work directory's candidates are timed: "cold" or "hot".

    Cold (CPU): every argument but the activation is flushed from the caches before each single
    run, as in the network, where each conv reads its weights from memory (ResNet-50's ~100 MB
    pass through a 32 MB L3) while its input is the previous kernel's fresh output. Hot is
    MetaSchedule's default, a ~100 ms loop over cached data; it ranks schedules by how they run
    from cache, and ResNet-50's kernels tuned hot ran 1.05-2.2x their recorded times in the
    network (`benchmarks/RESULTS.md`). GPUs, and CPU directories tuned before this setting
    existed, are hot. The two do not mix in one database: times are compared across records.
    """
    path = Path(work_dir) / MEASUREMENT
    if path.exists():
        return json.loads(path.read_text())["cache"]
    if has_records(work_dir):
        return "hot"
    return "cold" if target.kind.name == "llvm" else "hot"


def has_records(work_dir: str | Path) -> bool:
    """Whether a work directory holds measured records (MetaSchedule creates the file empty)."""
    path = Path(work_dir) / RECORDS
    return path.exists() and path.stat().st_size > 0


def save_measurement(work_dir: Path, cache: str) -> None:
    from .output import write_atomic
    write_atomic(Path(work_dir) / MEASUREMENT, json.dumps({"cache": cache}) + "\n")


def evaluator(cache: str):
    from tvm.s_tir import meta_schedule as ms
    if cache == "cold":
        return ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return None  # MetaSchedule's default


def machine(target) -> tuple:
    """What a record's times depend on besides its schedule: the target kind, its CPU (or GPU
    architecture) and its thread count. Records with another machine's times rank schedules for
    that machine: an AVX2 CPU's best vectorises 8 floats wide where an AVX-512 one wants 16."""
    attrs = target.attrs
    return (target.kind.name, str(attrs.get("mcpu") or attrs.get("arch") or ""), int(attrs.get("num-cores") or 0))

"""The tuning databases that ship with resdsl, and which one `bench` uses when given none.

They live in `benchmarks/tuning/`, one work directory per network, CPU and variant:
`NETWORK-llvm-CPU`, and variants (another lowering, another measurement) named
`VARIANT-NETWORK-llvm-CPU`. The first ones, `NETWORK-llvm` and its variants, were tuned on an
AMD znver3 (see benchmarks/RESULTS.md). The `-CPU` suffix marks a host's own directories;
where none is this host's, the CPU each was tuned on is read from its records.
"""
from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

from ..measurement import has_records, machine

COMMITTED = Path("benchmarks/tuning")
# `[VARIANT-]NETWORK-llvm[-CPU]`: network names are identifiers, so the first `-` ends a variant.
_NAME = re.compile(r"(?:(?P<variant>\w+)-)?(?P<network>\w+)-llvm(?:-(?P<cpu>.+))?")

# The widest vector extension a CPU has, widest first: it fixes how many floats a tuned
# schedule's vector loops hold (16 with AVX-512, 8 with AVX2). Measured on a znver5 (AVX-512),
# batch 1, against ONNX Runtime timed beside them: databases tuned on a rocketlake (AVX-512)
# ran ResNet-18 at 1.30x and ResNet-50 at 1.09x, those tuned on a znver3 (AVX2) 1.59x and
# 1.61x, although znver3 shares more of znver5's LLVM features (0.77 against 0.68 by Jaccard).
VECTOR_EXTENSIONS = ("avx512f", "avx2", "avx", "sse4.2", "sve2", "sve", "neon")


def committed_database(network: str, cpu: str) -> Path | None:
    """The committed database `bench` uses for `network` on a host with LLVM CPU `cpu`.

    Tuned on `cpu`: of its variants, the one whose tuning run measured the fastest whole
    network against ONNX Runtime timed beside it (report.json's `versus_onnxruntime`; a latency
    alone moves with the machine's load, and variants were tuned on different days).
    Tuned nowhere here: the database of the closest CPU, by vector extension first and shared
    LLVM features second, since another CPU's schedules still beat none by ~100x.
    `--tuned` picks any of them.
    """
    tuned = [p for p in _work_dirs(network) if has_records(p)]
    ours = [p for p in tuned if p.name.endswith(f"-llvm-{cpu}")]
    if ours:
        return min(ours, key=_ranking)  # min keeps the first of equals: the plain name
    host = _features(cpu)
    elsewhere = [(closeness(host, _features(c)), p) for p in tuned if (c := _tuned_cpu(p)) is not None]
    if not elsewhere:
        return None
    return min(elsewhere, key=lambda e: (tuple(-x for x in e[0]), *_ranking(e[1])))[1]


def retune_command(spec: Path, network: str, cpu: str, source: Path) -> str:
    """The `resdsl tune` command that makes `source`'s counterpart for `cpu`: the same variant
    name and lowering (records only apply to kernels lowered alike), seeded from its records."""
    from .tvm_build import Lowering
    match = _NAME.fullmatch(source.name)
    variant = f"{match['variant']}-" if match and match["variant"] and match["network"] == network else ""
    lowering = Lowering.saved(source) or Lowering.default("llvm")
    seed = source / "selected" if has_records(source / "selected") else source
    return " ".join([f"resdsl tune {spec}", *lowering.flags(), f"--work-dir {COMMITTED / f'{variant}{network}-llvm-{cpu}'}",
                     f"--reuse-records {seed}"])


def _work_dirs(network: str) -> list[Path]:
    """`[VARIANT-]NETWORK-llvm[-CPU]` under COMMITTED, plain names first."""
    found = [(m["variant"] is not None, p) for p in sorted(COMMITTED.glob(f"*{network}-llvm*"))
             if (m := _NAME.fullmatch(p.name)) and m["network"] == network]
    return [p for _, p in sorted(found)]


def closeness(host: frozenset[str], other: frozenset[str]) -> tuple[int, float]:
    """How well schedules tuned on a CPU with LLVM features `other` suit one with `host`:
    (same widest vector extension, Jaccard similarity of the features); larger is closer."""
    same_vectors = _widest(host) == _widest(other)
    shared = len(host & other) / len(host | other) if host | other else 1.0
    return int(same_vectors), shared


def _widest(features: frozenset[str]) -> str | None:
    return next((ext for ext in VECTOR_EXTENSIONS if ext in features), None)


@cache  # one LLVM query per CPU, however many directories were tuned on it
def _features(cpu: str) -> frozenset[str]:
    from tvm.target import Target, codegen
    try:
        return frozenset(str(f) for f in codegen.llvm_get_cpu_features(Target({"kind": "llvm", "mcpu": cpu})))
    except (ValueError, RuntimeError):  # a CPU this LLVM does not know: nothing in common
        return frozenset()


def _tuned_cpu(work_dir: Path) -> str | None:
    """The CPU a work directory's records were measured on, from its first record."""
    from .tvm_build import tuned_for
    target = tuned_for(work_dir)
    if target is None or target.kind.name != "llvm":
        return None
    return machine(target)[1] or None


def _ranking(work_dir: Path) -> tuple[float, float]:
    """(ratio to ONNX Runtime, latency in ms) from a tuning run's report; inf where it has none,
    so any measured one is a safer default than one never measured whole."""
    try:
        report = json.loads((work_dir / "report.json").read_text())
    except (OSError, ValueError):
        return math.inf, math.inf
    return _number(report, "versus_onnxruntime", "ratio"), _number(report, "network_latency", "median_ms")


def _number(report, section: str, key: str) -> float:
    try:
        return float(report[section][key])
    except (KeyError, TypeError, ValueError):
        return math.inf

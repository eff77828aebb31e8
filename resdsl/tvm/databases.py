"""The tuning databases that ship with resdsl, and which one `bench` and `compile --tuned` use.

They are package data (`resdsl/tvm/databases/`, or the directory `RESDSL_DATABASES` names), one
shipped `WorkDir` per network, CPU, batch and variant, named `[VARIANT-]NETWORK-llvm-CPU[-bBATCH]`:
each holds only what a build applies, each kernel's chosen record (`WorkDir.ship`). The CPU each
was tuned on is read from its records and the batch from its report, never from its name.
"""
from __future__ import annotations

import math
import os
import re
from functools import cache
from pathlib import Path

from ..diagnostics import ResdslError, printable
from .target import machine
from .workdir import WorkDir

ENVIRONMENT = "RESDSL_DATABASES"
# `[VARIANT-]NETWORK-llvm[-CPU]`: network names are identifiers, so the first `-` ends a variant.
_NAME = re.compile(r"(?:(?P<variant>\w+)-)?(?P<network>\w+)-llvm(?:-(?P<cpu>.+))?")

# The widest vector extension a CPU has, widest first: it fixes how many floats a tuned
# schedule's vector loops hold (16 with AVX-512, 8 with AVX2), and it predicted which other
# CPU's databases ran best better than shared features did (benchmarks/RESULTS.md).
VECTOR_EXTENSIONS = ("avx512f", "avx2", "avx", "sse4.2", "sve2", "sve", "neon")


def root() -> Path:
    """Where the shipped databases are: `$RESDSL_DATABASES`, else inside the installed package.
    A variable naming no directory is an error: ignored, it made `bench` drop its tuned rows and
    `--tuned NAME` say "none shipped" without a word about the variable."""
    given = os.environ.get(ENVIRONMENT)
    if given and not Path(given).is_dir():
        raise ResdslError(f"{ENVIRONMENT}={printable(given)} is not a directory",
                          hint=f"point {ENVIRONMENT} at a directory of databases, or unset it")
    return Path(given or Path(__file__).resolve().parent / "databases")


def shipped(name: str) -> WorkDir | None:
    """The shipped database called `name` (`resnet18-llvm-znver5`), if there is one."""
    if not _NAME.fullmatch(name):
        return None
    work_dir = WorkDir(root() / name)
    return work_dir if work_dir.has_records() else None


def choose(network: str, cpu: str, batch: int | None = 1, precision: str = "fp32") -> WorkDir | None:
    """The database a build of `network` at `batch` (None: any) on a host with LLVM CPU `cpu`
    uses when given none. A kernel's records apply only at the shapes they were tuned at, so
    another batch's database is never chosen: its build would run every kernel untuned.

    Tuned on `cpu`: of its variants, the one whose tuning run measured the fastest whole
    network against ONNX Runtime timed beside it (a latency alone moves with the machine's
    load, and variants were tuned on different days). Tuned nowhere here: the closest CPU's,
    by vector extension first and shared LLVM features second, since another CPU's schedules
    still beat none by two orders of magnitude. Only databases of `precision` are chosen: a bf16
    build rounds every conv's inputs, which nobody asking for the default should get unasked.
    """
    tuned = [w for w in _work_dirs(network) if w.has_records() and batch in (None, tuned_batch(w))
             and _precision(w) == precision]
    cpus = {w: _tuned_cpu(w) for w in tuned}
    ours = [w for w in tuned if cpus[w] == cpu]
    if ours:
        return min(ours, key=_ranking)  # min keeps the first of equals: the plain name
    host = _features(cpu)
    elsewhere = [(closeness(host, _features(c)), w) for w, c in cpus.items() if c is not None]
    if not elsewhere:
        return None
    return min(elsewhere, key=lambda e: (tuple(-x for x in e[0]), *_ranking(e[1])))[1]


def batches(network: str) -> list[int]:
    """The batches `network`'s shipped databases were tuned at, smallest first."""
    return sorted({tuned_batch(w) for w in _work_dirs(network) if w.has_records()})


def counterpart(source: WorkDir, network: str, cpu: str) -> str:
    """The name for `source`'s counterpart tuned on `cpu`: the same variant (records only apply
    to kernels lowered alike, and the variant names the lowering) and the same batch."""
    match = _NAME.fullmatch(source.name)
    variant = f"{match['variant']}-" if match and match["variant"] and match["network"] == network else ""
    batch = tuned_batch(source)
    return f"{variant}{network}-llvm-{cpu}" + (f"-b{batch}" if batch != 1 else "")


def tuned_batch(work_dir: WorkDir) -> int:
    """The batch `work_dir`'s records were tuned at, from its report; 1 where it has none (every
    run before `--batch` existed tuned at 1)."""
    try:
        report = work_dir.report()
    except ResdslError:
        return 1
    return report.batch if report else 1


def _work_dirs(network: str) -> list[WorkDir]:
    """`[VARIANT-]NETWORK-llvm[-CPU]` under the root, plain names first."""
    found = [(m["variant"] is not None, p) for p in sorted(root().glob(f"*{network}-llvm*"))
             if (m := _NAME.fullmatch(p.name)) and m["network"] == network]
    return [WorkDir(p) for _, p in sorted(found)]


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


def _precision(work_dir: WorkDir) -> str:
    try:
        lowering = work_dir.lowering()
    except (ResdslError, ValueError):  # damaged: building from it says what is wrong
        return "fp32"
    return lowering.precision if lowering else "fp32"


def _tuned_cpu(work_dir: WorkDir) -> str | None:
    target = work_dir.tuned_for()
    if target is None or target.kind.name != "llvm":
        return None
    return machine(target)[1] or None


def _ranking(work_dir: WorkDir) -> tuple[float, float]:
    """(ratio to ONNX Runtime, latency in ms) from its tuning run's report; inf where it has none,
    so any measured one is a safer default than one never measured whole."""
    try:
        report = work_dir.report()
    except ResdslError:  # damaged: ranked as unmeasured; building from it reads the rest
        report = None
    if report is None:
        return math.inf, math.inf
    return report.ratio or math.inf, report.latency_ms or math.inf

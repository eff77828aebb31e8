"""Tuning a network with MetaSchedule, resumable after a kill, as one library call.

`tune_network` searches until its trial budget is measured (`search`), chooses each kernel's
schedule (`selection`), builds the tuned library, times it, and writes a `TuneReport`: all of it
in a `WorkDir`. The rest of the search lives beside it: what a candidate is built and timed with
(`measuring`), the network's tasks and how trials are shared among them (`tasks`), and seeding
from other work directories (`reuse`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .lowering import Lowering
from .report import TuneReport
from .search import Progress, TuneOptions, search
from .target import machine
from .workdir import WorkDir


def tune_network(net, weights: dict, target, work_dir: WorkDir, options: TuneOptions = TuneOptions(),
                 library: Path | None = None, on_progress: Callable[[Progress], None] | None = None,
                 on_note: Callable[[str], None] | None = None) -> TuneReport:
    """Tune `net`'s kernels for `target` into `work_dir`, build the tuned library (default
    `work_dir.library_path`), time it where this host can run it, and save the report."""
    from .build import build, export, relax_module
    note = on_note or (lambda message: None)
    kind = target.kind.name
    lowering = Lowering.resolve(kind, work_dir=work_dir, seeds=options.reuse, **options.lowering)
    if (options.reuse and work_dir.lowering() is None and lowering != Lowering.default(kind)
            and lowering == Lowering.seeded(kind, options.reuse)):
        note(f"lowered as {options.reuse[0].path} was ({lowering.describe()}), so its records apply")
    mod = relax_module(net.graph, weights, options.batch, lowering)
    work_dir.path.mkdir(parents=True, exist_ok=True)
    work_dir.save_lowering(lowering)
    def kernels_at(batch: int) -> list:  # to seed from records tuned at another batch
        from .tasks import extract_tasks
        return extract_tasks(relax_module(net.graph, weights, batch, lowering), target, lowering)[1]
    results = search(mod, target, work_dir, lowering, options, on_progress, note, kernels_at)
    library = library or work_dir.library_path(net.name)
    export(build(mod, target, work_dir, lowering), library)
    report = TuneReport(
        network=net.name,
        target=kind,
        batch=options.batch,
        trials_budget=options.trials,
        lowering=asdict(lowering),
        measurement=work_dir.measurement(kind),
        library=str(library),
        tasks=results,
    )
    if options.rpc is None and (kind == "llvm" or _has_gpu()):
        from ..ir import INPUT
        report.network_latency = measure(library, (options.batch, *net.graph.shape(INPUT)),
                                         "cuda" if kind == "cuda" else "cpu")
        if kind == "llvm":
            from .engine import versus_onnxruntime
            threads = machine(target)[2] or 1
            report.versus_onnxruntime = versus_onnxruntime(
                net, weights, options.batch, library, target, threads, report.latency_ms
            )
    work_dir.save_report(report)
    return report


def _has_gpu() -> bool:
    import tvm
    return bool(tvm.cuda().exist)


def measure(library: Path, shape: tuple[int, ...], device: str, repeat: int = 20) -> dict:
    """Whole-network latency of a built library: median and spread over `repeat` runs."""
    import numpy as np
    import tvm

    from .build import load_vm
    vm, dev = load_vm(library, device)
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32), dev)
    timer = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0)
    results = sorted(float(r) * 1e3 for r in timer(x).results)
    return {
        "median_ms": results[len(results) // 2],
        "min_ms": results[0],
        "max_ms": results[-1],
        "repeat": repeat,
    }

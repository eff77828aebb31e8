"""Tuning a network with MetaSchedule, resumable after a kill, as one library call.

`tune_network` searches until its trial budget is measured, chooses each kernel's schedule
(`selection`), builds the tuned library, times it, and writes a `TuneReport`: all of it in a
`WorkDir`. Resuming: a line cut short by `kill -9` is dropped, the records already measured
count against the budget, and MetaSchedule's evolutionary search seeds itself from them, so a
restarted run continues rather than starts over.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..diagnostics import OptionError, ResdslError
from . import selection
from .lowering import Lowering
from .report import TaskResult, TuneReport
from .target import machine
from .workdir import WorkDir


@dataclass
class RPC:
    """A TVM RPC tracker whose devices measure the candidates."""
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, tracker: str, key: str | None) -> "RPC":
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise OptionError(f"the RPC tracker `{tracker}` is not HOST:PORT", ("rpc_tracker",),
                              hint="e.g. 127.0.0.1:9190")
        if not key:
            raise OptionError("an RPC tracker needs the device key its servers registered", ("rpc_key",))
        return cls(host, int(port), key)


@dataclass
class Progress:
    total: int
    tasks: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    best_ms: float | None = None  # sum over tasks of weight x best latency, where measured
    stage: str = "tuning"


def extract_tasks(mod, target, lowering):
    from tvm.s_tir import meta_schedule as ms
    from .build import kernels
    fused = kernels(mod, target, lowering)  # tasks are the fused TIR kernels
    return fused, ms.relax_integration.extract_tasks(fused, target)


def _synchronous(runner):
    """Wrap a runner so `run` returns only once every candidate is measured.

    MetaSchedule otherwise builds the next task's candidates while this batch is being timed;
    on a 2-core machine the compiler then steals the cores the measurement runs on, and every
    latency the search learns from is inflated and noisy. (RPC runs measure elsewhere.)
    """
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.ir.utils import derived_object

    @derived_object
    class SynchronousRunner(PyRunner):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def run(self, runner_inputs):
            futures = self.inner.run(runner_inputs)
            for future in futures:
                future.result()
            return futures

    return SynchronousRunner(runner)


def evaluator(cache: str):
    """How a candidate is timed: cold (caches flushed before each single run) or MetaSchedule's default."""
    from tvm.s_tir import meta_schedule as ms
    if cache == "cold":
        return ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return None


def make_runner(target, rpc: RPC | None, cache: str = "hot"):
    from tvm.s_tir import meta_schedule as ms
    timing = evaluator(cache)
    if rpc is not None:
        config = ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port, tracker_key=rpc.key,
                                     session_timeout_sec=60)
        # Synchronous too: the scheduler commits a batch before it picks the next task.
        return _synchronous(ms.runner.RPCRunner(rpc_config=config, evaluator_config=timing))
    if target.kind.name == "cuda":
        import tvm
        if not tvm.cuda().exist:
            raise OptionError(
                "no CUDA GPU on this machine to measure tuning candidates on",
                ("rpc_tracker", "rpc_key"),
                hint="tune on a machine with a GPU, or measure on remote GPUs through an RPC tracker",
            )
    return _synchronous(ms.runner.LocalRunner(evaluator_config=timing))


def build_without_intrinsics(mod, target, _params):
    """MetaSchedule's default build, minus `import tvm.s_tir.tensor_intrin`.

    That import registers every tensor intrinsic and its CUDA half alone takes ~40 s on these
    2-core machines: longer than the builder's per-candidate timeout, so every candidate failed.
    resdsl builds fp32 networks, whose schedules (CPU or CUDA) use no tensor intrinsics.
    """
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def register_intrinsics(target) -> None:
    """Register the tensor intrinsics `target`'s schedule rules may name, and no others.

    Every TuneContext runs `import tvm.s_tir.tensor_intrin`, which parses the TVMScript of every
    intrinsic TVM has (CUDA, ROCm, Hexagon, Arm, x86, RISC-V): ~95 s of each `resdsl tune`'s
    start-up on a 2-core EPYC, 70 s of it CUDA's. The package is entered as already imported,
    with only the submodules of this target's kind: CPU rules name x86's VNNI/AVX-512 dot
    products (or Arm's, RISC-V's) on CPUs that have them; CUDA's name CUDA's.
    """
    import importlib
    import importlib.util
    import sys
    package = "tvm.s_tir.tensor_intrin"
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return  # another TVM layout: let TuneContext import it all
    sys.modules[package] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    families = ("cuda",) if target.kind.name == "cuda" else ("x86", "arm_cpu", "riscv_cpu")
    for family in families:
        importlib.import_module(f"{package}.{family}")


def make_builder(target):
    from tvm.s_tir import meta_schedule as ms
    return ms.builder.LocalBuilder(f_build=build_without_intrinsics,
                                   timeout_sec=60 if target.kind.name == "llvm" else 120)


def _measured(database, mod) -> tuple[int, float | None]:
    """(trials, best latency in ms) of one kernel in the database."""
    if not database.has_workload(mod):
        return 0, None
    records = database.get_top_k(database.commit_workload(mod), 10**6)
    times = [sum(float(t) for t in r.run_secs) / len(r.run_secs) for r in records if r.run_secs]
    return len(records), (min(times) * 1e3 if times else None)


def task_results(work_dir: WorkDir, tasks) -> list[TaskResult]:
    """Best measured latency per task, read back from the database."""
    from tvm.s_tir.analysis import estimate_tir_flops
    database = work_dir.database()
    results = []
    for task in tasks:
        mod = task.dispatched[0]
        result = TaskResult(task.task_name, int(task.weight), flops=float(estimate_tir_flops(mod)))
        result.trials, result.best_ms = _measured(database, mod)
        results.append(result)
    return results


def pick_task(stats: dict[int, tuple[float, int, float | None]]) -> int:
    """The next task to spend a batch of trials on.

    `stats`: task id -> (weight, trials so far, best ms or None). Tasks never measured come
    first, in order; after that, the one with the most weighted latency per trial spent, so
    trials go to each kernel in proportion to its share of the network's time. A kernel that
    got faster gives up its turn; one that stays slow keeps getting trials.
    """
    unmeasured = [i for i, (_, trials, _) in stats.items() if trials == 0]
    if unmeasured:
        return min(unmeasured)

    def share_per_trial(i: int) -> float:
        weight, trials, best = stats[i]
        return weight * best / trials if best is not None else 0.0  # all failed: last resort
    return max(sorted(stats), key=share_per_trial)


def _share_scheduler(database):
    """MetaSchedule's task scheduler interface around `pick_task`.

    Round-robin spends the budget evenly, so kernels that take 10% of the network got the same
    trials as ones that take 1%; the gradient scheduler weighs them, but keeps every result of its
    first pass over the tasks in memory (tens of minutes here), where a kill loses them. This one
    commits each batch (the runner is synchronous, so every batch is done when the next is chosen)
    and reads trials and best latencies back from the database, so a resumed run continues the
    same allocation.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class ShareScheduler(PyTaskScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.database = database

        def next_task_id(self) -> int:
            scheduler = self._outer()
            tasks = scheduler.tasks_
            for i in range(len(tasks)):
                scheduler.touch_task(i)  # joins a measured batch: commits its records
            stats = {i: (float(t.task_weight), *_measured(self.database, t.ctx.mod))
                     for i, t in enumerate(tasks) if not t.is_terminated}
            return pick_task(stats) if stats else -1

    return ShareScheduler()


# Records from another machine are timed again here, the best few per kernel: enough to seed
# the search with schedules that were good there, without compiling thousands of them.
RETIME_TOP = 8


@dataclass
class Reused:
    copied: int = 0  # records committed here; they count against --trials like any other
    left_out: int = 0  # another machine's records that could not be timed again here


def reuse_records(work_dir: WorkDir, sources: list[WorkDir], tasks, target, retime: bool = True,
                  on_kernel: Callable[[int, int], None] | None = None) -> Reused:
    """Copy into `work_dir` the measured records that `sources` hold for these tasks' kernels.

    MetaSchedule keys records by the kernel's structure, so another work directory's records
    apply wherever the same kernel appears: another lowering of the same network (only the
    kernels it changed need tuning). Across networks, kernels that look alike need not match
    (ResNet-18's layer3 conv + bias + ReLU records did not apply to ResNet-50's). Kernels that
    already have records here are left alone, so repeating it is harmless.

    Times are compared across records, so every copied record carries a time measured the way
    this directory measures, on this machine. From the same machine (`target.machine`) they
    are copied as they are, and records timed hot and cold do not mix (a selection holds its
    candidates re-timed cold). From another CPU, each kernel's
    RETIME_TOP best are built and timed again here, and keep only that time. Where this host
    is not where the records will be measured (a GPU target, or `retime` False: an RPC
    tracker's devices), another machine's records are left out and counted.
    """
    from tvm.s_tir import meta_schedule as ms
    ours = work_dir.measurement(target.kind.name)  # before the database below creates its (empty) files
    into = work_dir.database()
    retime = retime and target.kind.name == "llvm"
    # Check every source before committing anything, so a refusal leaves the directory as it was.
    plan = []
    for source in sources:
        if not source.has_records():
            raise ResdslError(
                f"{source.path} holds no tuning records", hint="give a `resdsl tune` work directory"
            )
        theirs = source.measurement(target.kind.name)
        database = source.database()
        for k, task in enumerate(tasks):
            mod = task.dispatched[0]
            if not database.has_workload(mod) or _measured(into, mod)[0]:
                continue
            here, elsewhere = [], []
            for record in database.get_top_k(database.commit_workload(mod), 10**6):
                (here if machine(record.target) == machine(target) else elsewhere).append(record)
            if here and theirs != ours:
                raise ResdslError(f"{source.path}'s records were timed with the cache {theirs}, "
                                  f"{work_dir.path}'s {ours}",
                                  hint=f"seed from {source.selected.path} (its candidates re-timed cold)"
                                  if theirs == "hot" else "seed from a directory timed the same way")
            plan.append((k, mod, here, elsewhere))
    reused = Reused()
    seeded = set()  # a kernel seeded from the first source that has it, as if the sources were one
    for i, (k, mod, here, elsewhere) in enumerate(plan):
        if on_kernel:
            on_kernel(i, len(plan))
        if k in seeded:
            continue
        timed = [(r, r.run_secs) for r in here]
        if elsewhere and retime:
            elsewhere = elsewhere[:RETIME_TOP]
            timed += [
                (elsewhere[j], [secs]) for j, secs in selection.retime(elsewhere, target, cold=ours == "cold")
            ]
        elif elsewhere:
            reused.left_out += len(elsewhere)
        if not timed:
            continue
        seeded.add(k)
        workload = into.commit_workload(mod)
        for record, run_secs in timed:
            into.commit_tuning_record(ms.database.TuningRecord(record.trace, workload, run_secs, target,
                                                                 record.args_info))
            reused.copied += 1
    return reused


def heaviest(tasks, count: int | None):
    """The `count` tasks with the most FLOPs x occurrences: where a small budget pays off."""
    if count is None or count >= len(tasks):
        return list(tasks)
    from tvm.s_tir.analysis import estimate_tir_flops
    ranked = sorted(tasks, key=lambda t: -estimate_tir_flops(t.dispatched[0]) * t.weight)
    keep = {id(t) for t in ranked[:count]}
    return [t for t in tasks if id(t) in keep]  # keep extraction order, so reruns see the same list




@dataclass
class TuneOptions:
    """What a tuning run may be told besides the network, the target and the work directory."""
    trials: int = 512  # measured candidates in all, across tasks and restarts
    batch: int = 1
    rpc: RPC | None = None
    max_tasks: int | None = None  # tune only the N kernels with the most FLOPs
    select_top: int = 16  # CPU: re-time each kernel's K best records cold and keep the fastest (0: don't)
    reuse: tuple[WorkDir, ...] = ()  # work directories whose records for the same kernels seed this one
    lowering: dict = field(default_factory=dict)  # `Lowering.resolve` options given: layout, winograd, ...
    verbose: bool = False  # MetaSchedule's own log on the console too


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
    results = search(mod, target, work_dir, lowering, options, on_progress, note)
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


def search(mod, target, work_dir: WorkDir, lowering: Lowering, options: TuneOptions,
           on_progress: Callable[[Progress], None] | None = None,
           on_note: Callable[[str], None] | None = None) -> list[TaskResult]:
    """Search until `options.trials` records are measured, then (CPU, measured here) choose each
    kernel's schedule among its `select_top` best by timing them again; 0 keeps the recorded best."""
    from tvm.s_tir import meta_schedule as ms
    # MetaSchedule logs every trial to the console at its logger's level; keep the console for
    # the progress display (the full log is in the work directory's logs/ either way).
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(
        logging.INFO if options.verbose else logging.WARNING
    )
    trials, rpc = options.trials, options.rpc
    work_dir.path.mkdir(parents=True, exist_ok=True)
    done = _repair(work_dir, on_note)
    _, tasks = extract_tasks(mod, target, lowering)
    if not tasks:
        raise ResdslError("the network has no kernels to tune")
    tasks = heaviest(tasks, options.max_tasks)
    cache = work_dir.measurement(target.kind.name)
    work_dir.save_measurement(cache)
    progress = Progress(total=trials, tasks=len(tasks), done=min(done, trials))
    if options.reuse:
        _seed(work_dir, options.reuse, tasks, target, rpc, progress, on_progress, on_note)
        done = _repair(work_dir, on_note)
        progress.done = min(done, trials)
    runner = make_runner(target, rpc, cache)
    remaining = trials - done
    # Small iterations spread a small budget over the tasks; large ones amortise search overhead.
    trials_per_iter = max(4, min(64, trials // len(tasks)))
    if remaining > 0:
        work_dir.discard_selection()  # new records may beat the chosen ones
        register_intrinsics(target)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=tasks,
            work_dir=str(work_dir.path),
            space="post-order-apply",
            strategy="evolutionary",
        )
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(work_dir, progress, stop, on_progress), daemon=True)
        watcher.start()
        database = work_dir.database()
        try:
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir.path),
                          max_trials_global=remaining, num_trials_per_iter=min(trials_per_iter, remaining),
                          builder=make_builder(target), runner=runner, database=database,
                          task_scheduler=_share_scheduler(database))
        finally:
            stop.set()
            watcher.join()
    results = task_results(work_dir, tasks)
    progress.done = work_dir.count_records()
    progress.best_ms = _estimate(results)
    if options.select_top > 0 and rpc is None and target.kind.name == "llvm":
        _select(work_dir, target, tasks, options.select_top, results, progress, on_progress)
    if on_progress:
        on_progress(progress)
    return results


def _repair(work_dir: WorkDir, on_note: Callable[[str], None] | None) -> int:
    """Set damaged lines of the search's database and of its selection aside (`WorkDir.repair`),
    saying which; the number of records the search keeps. A selection that lost lines no longer
    holds what it chose: it is dropped, and made again."""
    note = on_note or (lambda message: None)
    repair = work_dir.repair()
    if repair.set_aside:
        note(f"set aside {repair.set_aside} unreadable line(s) of the database in {repair.aside_path}; "
             f"{repair.records} records remain")
    selected = work_dir.selected.repair()
    if selected.set_aside:
        note(f"set aside {selected.set_aside} unreadable line(s) of the selection in {selected.aside_path}; "
             "it is made again")
        work_dir.discard_selection()
    for problem in (*repair.problems, *selected.problems)[:_PROBLEMS_SHOWN]:
        note(problem)
    return repair.records


_PROBLEMS_SHOWN = 5


def _seed(work_dir: WorkDir, sources: tuple[WorkDir, ...], tasks, target, rpc: RPC | None, progress: Progress,
          on_progress, on_note) -> None:
    def show(i: int, n: int) -> None:
        progress.stage = f"seeding {i + 1}/{n}"
        if on_progress:
            on_progress(progress)
    reused = reuse_records(work_dir, list(sources), tasks, target, retime=rpc is None, on_kernel=show)
    if reused.left_out and on_note:
        # Their times rank schedules for the machine they ran on; only this host's CPU can time them again.
        why = ("this run measures on the tracker's devices, and records from elsewhere are timed again "
               "only on this host" if rpc else "records from another GPU are not timed again")
        on_note(f"left out {reused.left_out} records measured on another machine ({why}); "
                f"seed from a directory tuned for {machine(target)[1] or target.kind.name}")
    if reused.copied:
        work_dir.discard_selection()
    progress.stage = "tuning"


def _select(work_dir: WorkDir, target, tasks, top_k: int, results: list[TaskResult], progress: Progress,
            on_progress) -> None:
    """Run (or, with no new records and the same `top_k` since, reuse) the selection and note it
    in `results`."""
    def show(i: int, n: int) -> None:
        progress.stage = f"selecting {i + 1}/{n}"
        if on_progress:
            on_progress(progress)
    last = work_dir.choices()
    if last is None or last["top_k"] != top_k:
        selection.select(work_dir, target, tasks, top_k, on_kernel=show)
        last = work_dir.choices()
    progress.stage = "tuned"
    chosen = {c["name"]: (c["rank"], c["selected_ms"]) for c in last["choices"]}
    for task, result in zip(tasks, results):
        result.selected_rank, result.selected_ms = chosen.get(task.task_name, (None, None))


def _watch(work_dir: WorkDir, progress: Progress, stop: threading.Event, on_progress) -> None:
    while not stop.wait(1.0):
        try:
            progress.done = work_dir.count_records()
            progress.best_ms = work_dir.best_estimate_ms()
        except ResdslError:  # the file replaced mid-search: the search itself will say so
            continue
        if on_progress:
            on_progress(progress)


def _estimate(results: list[TaskResult]) -> float | None:
    measured = [r for r in results if r.best_ms is not None]
    return sum(r.weight * r.best_ms for r in measured) if measured else None


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

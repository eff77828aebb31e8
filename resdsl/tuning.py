"""`resdsl tune`: MetaSchedule tuning that survives being killed, with a live progress display.

The work directory holds MetaSchedule's JSON database (`database_workload.json`,
`database_tuning_record.json`: one JSON record per line, appended as candidates are measured),
the tuned library and `report.json`. Resuming: a line cut short by `kill -9` is dropped, the
records already measured count against `--trials`, and MetaSchedule's evolutionary search seeds
itself from them, so a restarted run continues rather than starts over.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import selection
from .diagnostics import ResdslError
from .measurement import RECORDS, evaluator, machine, measurement, save_measurement

WORKLOADS = "database_workload.json"


@dataclass
class RPC:
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, tracker: str, key: str | None) -> "RPC":
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise ResdslError(f"--rpc-tracker `{tracker}` is not HOST:PORT", hint="e.g. --rpc-tracker 127.0.0.1:9190")
        if not key:
            raise ResdslError("--rpc-tracker needs --rpc-key (the device key the servers registered)")
        return cls(host, int(port), key)


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int = 0
    best_ms: float | None = None
    flops: float = 0.0  # per call, as MetaSchedule estimates them: with best_ms, how close to peak
    selected_ms: float | None = None  # the chosen record re-timed with cold weights (resdsl.selection)
    selected_rank: int | None = None  # its place among the search's records, 0 the recorded best


@dataclass
class Progress:
    total: int
    tasks: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    best_ms: float | None = None  # sum over tasks of weight x best latency, where measured
    stage: str = "tuning"


def repair_database(work_dir: Path) -> int:
    """Drop a last line cut short by a kill; return how many tuning records survive."""
    count = 0
    for name in (WORKLOADS, RECORDS):
        path = work_dir / name
        if not path.exists():
            continue
        lines = path.read_bytes().split(b"\n")
        good = []
        for line in lines:
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                break  # a torn write is only ever the last line; nothing after it is trusted
            good.append(line)
        data = b"".join(line + b"\n" for line in good)
        if data != path.read_bytes():
            tmp = path.with_suffix(".repair")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        if name == RECORDS:
            count = len(good)
    return count


def extract_tasks(mod, target, lowering):
    from tvm.s_tir import meta_schedule as ms
    from .backends.tvm_build import kernels
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
            raise ResdslError("no CUDA GPU on this machine to measure tuning candidates on",
                              hint="run `resdsl tune` on a machine with a GPU, or measure on remote GPUs "
                                   "with --rpc-tracker HOST:PORT --rpc-key KEY")
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


def task_results(work_dir: Path, tasks) -> list[TaskResult]:
    """Best measured latency per task, read back from the database."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    database = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=True)
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


def reuse_records(work_dir: Path, sources: list[Path], tasks, target, retime: bool = True,
                  on_kernel: Callable[[int, int], None] | None = None) -> Reused:
    """Copy into `work_dir` the measured records that `sources` hold for these tasks' kernels.

    MetaSchedule keys records by the kernel's structure, so another work directory's records
    apply wherever the same kernel appears: another lowering of the same network (only the
    kernels it changed need tuning). Across networks, kernels that look alike need not match
    (ResNet-18's layer3 conv + bias + ReLU records did not apply to ResNet-50's). Kernels that
    already have records here are left alone, so repeating it is harmless.

    Times are compared across records, so every copied record carries a time measured the way
    this directory measures, on this machine. From the same machine (`measurement.machine`)
    they are copied as they are, and records timed hot and cold do not mix (a selection,
    `DIR/selected`, holds its candidates re-timed cold). From another CPU, each kernel's
    RETIME_TOP best are built and timed again here, and keep only that time. Where this host
    is not where the records will be measured (a GPU target, or `retime` False: an RPC
    tracker's devices), another machine's records are left out and counted.
    """
    from tvm.s_tir import meta_schedule as ms
    ours = measurement(work_dir, target)  # before the database below creates its (empty) files
    into = ms.database.JSONDatabase(work_dir=str(work_dir))
    retime = retime and target.kind.name == "llvm"
    # Check every source before committing anything, so a refusal leaves the directory as it was.
    plan = []
    for source in sources:
        if not (Path(source) / RECORDS).exists():
            raise ResdslError(f"{source} holds no tuning records", hint="give a `resdsl tune` work directory")
        theirs = measurement(source, target)
        database = ms.database.JSONDatabase(work_dir=str(source), allow_missing=True)
        for k, task in enumerate(tasks):
            mod = task.dispatched[0]
            if not database.has_workload(mod) or _measured(into, mod)[0]:
                continue
            here, elsewhere = [], []
            for record in database.get_top_k(database.commit_workload(mod), 10**6):
                (here if machine(record.target) == machine(target) else elsewhere).append(record)
            if here and theirs != ours:
                raise ResdslError(f"{source}'s records were timed with the cache {theirs}, {work_dir}'s {ours}",
                                  hint=f"seed from {Path(source) / 'selected'} (its candidates re-timed cold)"
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
            timed += [(elsewhere[j], [secs]) for j, secs in selection.retime(elsewhere, target, cold=ours == "cold")]
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


def tune(mod, target, work_dir: Path, trials: int, lowering, rpc: RPC | None = None,
         on_progress: Callable[[Progress], None] | None = None, verbose: bool = False,
         max_tasks: int | None = None, select_top: int = 16, reuse: list[Path] = (),
         on_note: Callable[[str], None] | None = None) -> list[TaskResult]:
    """Search until `trials` records are measured, then (CPU, measured here) choose each kernel's
    schedule among its `select_top` best by timing them again; 0 keeps the recorded best."""
    import logging

    from tvm.s_tir import meta_schedule as ms
    # MetaSchedule logs every trial to the console at its logger's level; keep the console for
    # our progress bar (the full log is in WORK_DIR/logs either way).
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.INFO if verbose else logging.WARNING)
    work_dir.mkdir(parents=True, exist_ok=True)
    done = repair_database(work_dir)
    fused, tasks = extract_tasks(mod, target, lowering)
    if not tasks:
        raise ResdslError("the network has no kernels to tune")
    tasks = heaviest(tasks, max_tasks)
    cache = measurement(work_dir, target)
    save_measurement(work_dir, cache)
    progress = Progress(total=trials, tasks=len(tasks), done=min(done, trials))
    if reuse:
        def show(i: int, n: int) -> None:
            progress.stage = f"seeding {i + 1}/{n}"
            if on_progress:
                on_progress(progress)
        reused = reuse_records(work_dir, list(reuse), tasks, target, retime=rpc is None, on_kernel=show)
        if reused.left_out and on_note:
            # Their times rank schedules for the machine they ran on; only this host's CPU can time them again.
            why = ("this run measures on the tracker's devices, and records from elsewhere are timed again "
                   "only on this host" if rpc else "records from another GPU are not timed again")
            on_note(f"left out {reused.left_out} records measured on another machine ({why}); "
                    f"seed from a directory tuned for {machine(target)[1] or target.kind.name}")
        if reused.copied:
            selection.discard(work_dir)
            done = repair_database(work_dir)
            progress.done = min(done, trials)
        progress.stage = "tuning"
    runner = make_runner(target, rpc, cache)
    remaining = trials - done
    # Small iterations spread a small budget over the tasks; large ones amortise search overhead.
    trials_per_iter = max(4, min(64, trials // len(tasks)))
    if remaining > 0:
        selection.discard(work_dir)  # new records may beat the chosen ones
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=tasks, work_dir=str(work_dir), space="post-order-apply", strategy="evolutionary")
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(work_dir, progress, done, stop, on_progress), daemon=True)
        watcher.start()
        database = ms.database.JSONDatabase(work_dir=str(work_dir))
        try:
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                          max_trials_global=remaining, num_trials_per_iter=min(trials_per_iter, remaining),
                          builder=make_builder(target), runner=runner, database=database,
                          task_scheduler=_share_scheduler(database))
        finally:
            stop.set()
            watcher.join()
    results = task_results(work_dir, tasks)
    progress.done = _count_lines(work_dir / RECORDS)
    progress.best_ms = _estimate(results)
    if select_top > 0 and rpc is None and target.kind.name == "llvm":
        _select(work_dir, target, tasks, select_top, results, progress, on_progress)
    if on_progress:
        on_progress(progress)
    return results


def _select(work_dir: Path, target, tasks, top_k: int, results: list[TaskResult], progress: Progress,
            on_progress) -> None:
    """Run (or, with no new records and the same `top_k` since, reuse) the selection and note it
    in `results`."""
    def show(i: int, n: int) -> None:
        progress.stage = f"selecting {i + 1}/{n}"
        if on_progress:
            on_progress(progress)
    last = selection.saved(work_dir)
    if last is None or last["top_k"] != top_k:
        selection.select(work_dir, target, tasks, top_k, on_kernel=show)
        last = selection.saved(work_dir)
    progress.stage = "tuned"
    chosen = {c["name"]: (c["rank"], c["selected_ms"]) for c in last["choices"]}
    for task, result in zip(tasks, results):
        result.selected_rank, result.selected_ms = chosen.get(task.task_name, (None, None))


def _watch(work_dir: Path, progress: Progress, start: int, stop: threading.Event, on_progress) -> None:
    while not stop.wait(1.0):
        progress.done = _count_lines(work_dir / RECORDS)
        progress.best_ms = _best_from_file(work_dir)
        if on_progress:
            on_progress(progress)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def _best_from_file(work_dir: Path) -> float | None:
    """Sum over workloads of their best latency so far (an estimate; task weights not applied)."""
    best: dict[int, float] = {}
    try:
        with open(work_dir / RECORDS, "rb") as f:
            for line in f:
                try:
                    workload, record = json.loads(line)
                    secs = [float(s) for s in record[1] or []]
                except (ValueError, TypeError, IndexError):
                    continue
                if secs and secs[0] < 1e9:
                    best[workload] = min(best.get(workload, float("inf")), sum(secs) / len(secs))
    except FileNotFoundError:
        return None
    return sum(best.values()) * 1e3 if best else None


def _estimate(results: list[TaskResult]) -> float | None:
    measured = [r for r in results if r.best_ms is not None]
    return sum(r.weight * r.best_ms for r in measured) if measured else None


def measure(executable_path: Path, shape: tuple[int, ...], device: str, repeat: int = 20) -> dict:
    """Whole-network latency of a built library: median and spread over `repeat` runs."""
    import numpy as np
    import tvm
    from .backends.tvm_build import load_vm
    vm, dev = load_vm(executable_path, device)
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32), dev)
    timer = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0)
    results = sorted(float(r) * 1e3 for r in timer(x).results)
    return {"median_ms": results[len(results) // 2], "min_ms": results[0], "max_ms": results[-1], "repeat": repeat}

"""The resumable search: MetaSchedule tunes a network's kernels until the trial budget is
measured, seeded first from other work directories (`reuse`) and followed, on a CPU measured
here, by tiles traded between kernels of the same conv (`grafting`) and the selection of each
kernel's schedule (`selection`).

Resuming: a line cut short by `kill -9` is dropped, the records already measured count against
the budget, and MetaSchedule's evolutionary search seeds itself from them, so a restarted run
continues rather than starts over.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..diagnostics import ResdslError
from . import bf16, selection
from .grafting import graft_records
from .lowering import Lowering
from .measuring import RPC, make_builder, make_runner, register_intrinsics
from .report import TaskResult
from .reuse import reuse_records
from .target import machine
from .tasks import extract_tasks, heaviest, share_scheduler, task_results
from .workdir import WorkDir


@dataclass
class Progress:
    """How far a tuning run is, for a progress display."""
    total: int
    tasks: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    best_ms: float | None = None  # sum over tasks of weight x best latency, where measured
    stage: str = "tuning"


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


def search(mod, target, work_dir: WorkDir, lowering: Lowering, options: TuneOptions,
           on_progress: Callable[[Progress], None] | None = None,
           on_note: Callable[[str], None] | None = None,
           kernels_at: Callable[[int], list] | None = None) -> list[TaskResult]:
    """Search until `options.trials` records are measured, then (CPU, measured here) choose each
    kernel's schedule among its `select_top` best by timing them again; 0 keeps the recorded best.
    `kernels_at(batch)`: the network's tasks at another batch, to seed from records tuned there."""
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
        _seed(work_dir, options, tasks, target, progress, on_progress, on_note, kernels_at)
        done = _repair(work_dir, on_note)
        progress.done = min(done, trials)
    runner = make_runner(target, rpc, cache)
    remaining = trials - done
    # Small iterations spread a small budget over the tasks; large ones amortise search overhead.
    trials_per_iter = max(4, min(64, trials // len(tasks)))
    if remaining > 0:
        work_dir.discard_selection()  # new records may beat the chosen ones
        _tune(work_dir, tasks, target, runner, remaining, min(trials_per_iter, remaining), progress,
              on_progress, lowering)
    if rpc is None and target.kind.name == "llvm":
        _graft(work_dir, tasks, target, lowering, progress, on_progress)
    results = task_results(work_dir, tasks)
    progress.done = work_dir.count_records()
    progress.best_ms = _estimate(results)
    if options.select_top > 0 and rpc is None and target.kind.name == "llvm":
        _select(work_dir, target, tasks, options.select_top, results, progress, on_progress)
    if on_progress:
        on_progress(progress)
    return results


def _tune(work_dir: WorkDir, tasks, target, runner, remaining: int, trials_per_iter: int, progress: Progress,
          on_progress, lowering: Lowering) -> None:
    """MetaSchedule's search over `tasks` for `remaining` more trials, committing each batch,
    while `progress` follows the database."""
    from tvm.s_tir import meta_schedule as ms
    register_intrinsics(target)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=tasks,
        work_dir=str(work_dir.path),
        space=bf16.space() if lowering.precision == "bf16" else "post-order-apply",
        strategy="evolutionary",
    )
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(work_dir, progress, stop, on_progress), daemon=True)
    watcher.start()
    database = work_dir.database()
    try:
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir.path),
                      max_trials_global=remaining, num_trials_per_iter=trials_per_iter,
                      builder=make_builder(target), runner=runner, database=database,
                      task_scheduler=share_scheduler(database))
    finally:
        stop.set()
        watcher.join()


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


def _seed(work_dir: WorkDir, options: TuneOptions, tasks, target, progress: Progress, on_progress, on_note,
          kernels_at: Callable[[int], list] | None) -> None:
    def show(i: int, n: int) -> None:
        progress.stage = f"seeding {i + 1}/{n}"
        if on_progress:
            on_progress(progress)
    rpc = options.rpc
    reused = reuse_records(work_dir, list(options.reuse), tasks, target, retime=rpc is None, on_kernel=show,
                           batch=options.batch, kernels_at=kernels_at)
    if reused.left_out and on_note:
        # Their times rank schedules for the machine they ran on; only this host's CPU can time them again.
        why = ("this run measures on the tracker's devices, and records from elsewhere are timed again "
               "only on this host" if rpc else "records from another GPU are not timed again")
        on_note(f"left out {reused.left_out} records measured on another machine ({why}); "
                f"seed from a directory tuned for {machine(target)[1] or target.kind.name}")
    if reused.copied:
        work_dir.discard_selection()
    progress.stage = "tuning"


def _graft(work_dir: WorkDir, tasks, target, lowering: Lowering, progress: Progress, on_progress) -> None:
    """Try each kernel's siblings' best tiles on it (`grafting`), timed here."""
    def show(i: int, n: int) -> None:
        progress.stage = f"grafting {i + 1}/{n}"
        if on_progress:
            on_progress(progress)
    space = bf16.space if lowering.precision == "bf16" else "post-order-apply"
    if graft_records(work_dir, tasks, target, space, on_kernel=show):
        work_dir.discard_selection()  # a graft may beat the chosen record
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

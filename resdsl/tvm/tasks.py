"""A network's tuning tasks: extracted from its fused kernels, the heaviest kept for a small
budget, what the database says of each (trials, best latency), and which one the next batch
of trials goes to.
"""
from __future__ import annotations

from .report import TaskResult
from .workdir import WorkDir


def extract_tasks(mod, target, lowering):
    from tvm.s_tir import meta_schedule as ms

    from .build import kernels
    fused = kernels(mod, target, lowering)  # tasks are the fused TIR kernels
    return fused, ms.relax_integration.extract_tasks(fused, target)


def measured(database, mod) -> tuple[int, float | None]:
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
        result.trials, result.best_ms = measured(database, mod)
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


def share_scheduler(database):
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
            stats = {i: (float(t.task_weight), *measured(self.database, t.ctx.mod))
                     for i, t in enumerate(tasks) if not t.is_terminated}
            return pick_task(stats) if stats else -1

    return ShareScheduler()


def heaviest(tasks, count: int | None):
    """The `count` tasks with the most FLOPs x occurrences: where a small budget pays off."""
    if count is None or count >= len(tasks):
        return list(tasks)
    from tvm.s_tir.analysis import estimate_tir_flops
    ranked = sorted(tasks, key=lambda t: -estimate_tir_flops(t.dispatched[0]) * t.weight)
    keep = {id(t) for t in ranked[:count]}
    return [t for t in tasks if id(t) in keep]  # keep extraction order, so reruns see the same list

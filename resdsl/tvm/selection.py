"""Choose each kernel's schedule by timing its best few tuning records again, as the network runs them.

The search records one measurement per candidate. Two things make its best record a poor pick
on a small shared machine:
- the machine's speed drifts (up to 2x over minutes here), so the minimum over hundreds of
  single measurements is partly a lucky draw: re-timed, the recorded bests ran well over their
  recorded times, and were often not the fastest of the top few (benchmarks/RESULTS.md);
- in a directory timed hot (`WorkDir.measurement`), the search saw the weights in cache, but in
  the network each conv reads them from memory (47 MB for ResNet-18 against a 32 MB L3), and
  schedules differ in how well they stream them.
So the top `k` records of every kernel are built again and timed with TVM's CPU cache flush (all
arguments but the activation cold), in rounds that take turns, and the fastest median wins.
Every re-timed candidate goes to the work directory's selection with its cold median as its
time, so that database's best record per kernel is the winner, which builds then prefer, and it
can seed a search that times candidates cold. Tuning further discards it, since new records may
beat it.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Callable

from .workdir import WorkDir


@dataclass
class Choice:
    name: str
    candidates: int  # records re-timed
    rank: int  # the winner's place in the search's own order (0: its recorded best)
    recorded_ms: float  # the search's best measurement of this kernel
    selected_ms: float  # the winner's median, re-timed cold


def select(work_dir: WorkDir, target, tasks, top_k: int = 16, rounds: int = 4, repeat: int = 5,
           on_kernel: Callable[[int, int], None] | None = None) -> list[Choice]:
    """Re-time each task's `top_k` records in `work_dir` and save the fastest; local CPU only."""
    from tvm.s_tir import meta_schedule as ms
    database = work_dir.database()
    staging = work_dir.staging()
    chosen = staging.database()
    choices = []
    for i, task in enumerate(tasks):
        if on_kernel:
            on_kernel(i, len(tasks))
        mod = task.dispatched[0]
        if not database.has_workload(mod):
            continue
        records = [r for r in database.get_top_k(database.commit_workload(mod), top_k) if r.run_secs]
        timed = _time_records(records, target, rounds, repeat)
        if not timed:
            continue
        # The records' own workload, not `mod`: the two are structurally equal, so the database
        # matched them, but block names may differ (a Relax variable's number, when another
        # lowering of the network was tuned into this directory first), and a trace names blocks.
        workload = chosen.commit_workload(records[0].workload.mod)
        for j, median in timed:
            chosen.commit_tuning_record(ms.database.TuningRecord(
                records[j].trace, workload, [median], records[j].target, records[j].args_info))
        rank, median = min(timed, key=lambda t: t[1])
        choices.append(Choice(task.task_name, len(records), rank, _mean(records[0]) * 1e3, median * 1e3))
    work_dir.commit_selection(staging, {"top_k": top_k, "choices": [asdict(c) for c in choices]})
    return choices


def retime(records, target, cold: bool = True) -> list[tuple[int, float]]:
    """(index, median seconds on this machine) of every one of `records` that builds and runs."""
    return _time_records(records, target, rounds=4, repeat=5, cold=cold)


def _mean(record) -> float:
    return sum(float(t) for t in record.run_secs) / len(record.run_secs)


def _time_records(records, target, rounds: int, repeat: int, cold: bool = True) -> list[tuple[int, float]]:
    """(index, median seconds) of every record that builds and runs on this machine; candidates
    take turns. `cold`: every argument but the activation flushed from cache before each run."""
    import numpy as np
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    timers = {}
    for i, record in enumerate(records):
        try:
            candidate = record.as_measure_candidate()
            # As the tuner measured it: the kernel reads its weights already packed.
            mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(candidate.sch.mod)
            lib = tvm.compile(mod, target=target).mod
        except Exception:  # noqa: BLE001 - a record that no longer builds is just not a candidate
            continue
        args = [tvm.runtime.tensor(rng.random([int(d) for d in a.shape]).astype(a.dtype), dev)
                for a in candidate.args_info]
        # One run per repeat; cold: every argument but the first (the activation) flushed first.
        timer = lib.time_evaluator(lib.entry_name, dev, number=1, repeat=repeat, min_repeat_ms=0,
                                   f_preproc="cache_flush_cpu_non_first_arg" if cold else "")
        timers[i] = (timer, args)
    times: dict[int, list[float]] = {i: [] for i in timers}
    for _ in range(rounds):
        for i, (timer, args) in timers.items():
            times[i].extend(timer(*args).results)
    return [(i, statistics.median(t)) for i, t in times.items()]

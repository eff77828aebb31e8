"""Seeding a tuning run with the measured records of other work directories, for the kernels
they share, each record timed the way this directory times its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..diagnostics import ResdslError
from . import selection
from .databases import tuned_batch
from .target import machine
from .tasks import measured
from .workdir import WorkDir

# Records from another machine are timed again here, the best few per kernel: enough to seed
# the search with schedules that were good there, without compiling thousands of them.
RETIME_TOP = 8


@dataclass
class Reused:
    copied: int = 0  # records committed here; they count against --trials like any other
    left_out: int = 0  # another machine's records that could not be timed again here


def reuse_records(work_dir: WorkDir, sources: list[WorkDir], tasks, target, retime: bool = True,
                  on_kernel: Callable[[int, int], None] | None = None, batch: int = 1,
                  kernels_at: Callable[[int], list] | None = None) -> Reused:
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

    A source tuned at another batch than this run's (`batch`) has records for other shapes of
    the same kernels: `kernels_at(its batch)` gives this network's tasks at that batch, paired
    with these by name, and each kernel's RETIME_TOP best schedules are replayed on this
    batch's kernel and timed here. Their tile sizes carry over but for the batch loop's,
    which MetaSchedule samples again (a batch-1 schedule's loop of 1 cannot split 8 images),
    so a batch-8 search starts from the batch-1 search's tiles for one image.
    """
    ours = work_dir.measurement(target.kind.name)  # before the database below creates its (empty) files
    into = work_dir.database()
    retime = retime and target.kind.name == "llvm"
    # Check every source before committing anything, so a refusal leaves the directory as it was.
    plan = [kernel for source in sources
            for kernel in _plan(work_dir, source, tasks, target, into, ours, batch, kernels_at)]
    return _copy(plan, into, target, ours, retime, on_kernel)


def _plan(work_dir: WorkDir, source: WorkDir, tasks, target, into, ours: str, batch: int,
          kernels_at: Callable[[int], list] | None) -> list[tuple]:
    """(task index, kernel, records from this machine, records from others) for each kernel that
    `source` has records of and `into` has none; refused if they were timed otherwise."""
    if not source.has_records():
        raise ResdslError(
            f"{source.path} holds no tuning records", hint="give a `resdsl tune` work directory"
        )
    theirs = source.measurement(target.kind.name)
    database = source.database()
    their_batch = tuned_batch(source)
    counterparts = None
    if their_batch != batch:
        if kernels_at is None:
            raise ResdslError(f"{source.path} was tuned at batch {their_batch}, not {batch}",
                              hint=f"seed from a directory tuned at batch {batch}")
        counterparts = {t.task_name: t.dispatched[0] for t in kernels_at(their_batch)}
    plan = []
    for k, task in enumerate(tasks):
        mod = task.dispatched[0]
        their_mod = mod if counterparts is None else counterparts.get(task.task_name)
        if their_mod is None or not database.has_workload(their_mod) or measured(into, mod)[0]:
            continue
        if counterparts is not None:  # their times are of other shapes: every record is timed again
            plan.append((k, mod, [], database.get_top_k(database.commit_workload(their_mod), RETIME_TOP)))
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
    return plan


def _replayed(records, mod, target, keep_times: bool = False) -> list:
    """`records`' schedules replayed on the kernel `mod` (the same computation, perhaps at another
    batch or with other names), as records of it, unmeasured unless `keep_times`; one that does
    not replay is left out."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    workload = ms.database.Workload(mod)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    out = []
    for record in records:
        schedule = replay(record.trace, record.workload.mod, mod)
        if schedule is not None:
            run_secs = record.run_secs if keep_times else None
            out.append(ms.database.TuningRecord(schedule.trace, workload, run_secs, target, args))
    return out


def replay(trace, theirs, mod):
    """`trace`, recorded on the kernel `theirs`, applied to `mod`: a schedule, or None where it
    does not apply.

    MetaSchedule matches kernels by structure, names aside, but a trace finds its blocks by name.
    Some names come from Relax variables (a reduction over `lv66` is the block `lv66_red`), which
    any change upstream renumbers: the same kernel in another lowering, or at another batch, is
    `lv65_red`. Where the plain trace fails, its block names are translated, block by block in
    program order (the kernels' blocks correspond so where their structures do), along with the
    blocks the schedule derives from them (`lv66_red_rf`)."""
    from tvm import s_tir
    from tvm.s_tir.schedule import Trace
    try:
        schedule = s_tir.Schedule(mod)
        trace.apply_to_schedule(schedule, remove_postproc=False)
        return schedule
    except Exception:  # noqa: BLE001 - TVM raises its own error types; try the names translated
        pass
    old, new = _block_names(theirs), _block_names(mod)
    if len(old) != len(new) or old == new:
        return None
    names = {a: b for a, b in zip(old, new) if a != b}

    def translated(name: str) -> str:
        base = max((a for a in names if name == a or name.startswith(a + "_")), key=len, default=None)
        return name if base is None else names[base] + name[len(base):]
    insts, decisions = trace.as_json(remove_postproc=False)
    for inst in insts:
        if inst[0] == "GetSBlock":
            inst[2][0] = translated(inst[2][0])
    try:
        schedule = s_tir.Schedule(mod)
        Trace.apply_json_to_schedule([insts, decisions], schedule)
        return schedule
    except Exception:  # noqa: BLE001 - TVM raises its own error types; such a schedule is no seed
        return None


def blocks(mod) -> list:
    """`mod`'s blocks (the nodes), depth first in program order."""
    from tvm import s_tir
    schedule = s_tir.Schedule(mod)
    nodes = []
    pending = [schedule.get_sblock("root")]
    while pending:
        block = pending.pop()
        nodes.append(schedule.get(block))
        pending.extend(reversed(schedule.get_child_blocks(block)))
    return nodes


def _block_names(mod) -> list[str]:
    return [node.name_hint for node in blocks(mod)]


def _copy(plan: list[tuple], into, target, ours: str, retime: bool,
          on_kernel: Callable[[int, int], None] | None) -> Reused:
    """Commit the planned records, each kernel's from the first source that has it (as if the
    sources were one), another machine's timed again here where `retime`."""
    from tvm.s_tir import meta_schedule as ms
    reused = Reused()
    seeded = set()
    for i, (k, mod, here, elsewhere) in enumerate(plan):
        if on_kernel:
            on_kernel(i, len(plan))
        if k in seeded:
            continue
        if here and _block_names(here[0].workload.mod) != _block_names(mod):
            here = _replayed(here, mod, target, keep_times=True)  # their traces name other blocks
        timed = [(r, r.run_secs) for r in here]
        if elsewhere and retime:
            # Replayed on this run's kernel: a schedule names the blocks it transforms, and a kernel
            # of the same structure (the same key) may name them otherwise.
            elsewhere = _replayed(elsewhere[:RETIME_TOP], mod, target)
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

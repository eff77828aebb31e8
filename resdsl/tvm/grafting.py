"""Tiles shared between kernels that compute the same conv with other epilogues.

MetaSchedule searches each fused kernel alone, and a conv followed by its bias is another task
than the same conv followed by its bias, the residual add and a ReLU: ResNet-50's layer1
projection and the last 1x1 conv of its blocks, ResNet-18's two 3x3 convs of a block. The
epilogue is inlined into the conv's loops, so tiles that suit one suit the other, yet two
searches find different ones. On a 2-core Zen 5 the search found 0.30 ms (caches flushed) for
ResNet-50's layer1 residual 1x1 conv and 0.23 ms for its projection, the same conv; the
projection's tiles on the residual kernel ran at 0.23 ms.

A graft keeps the recipient's own trace (it names the recipient's blocks and inlines its
epilogue) and takes the donor's sampled decisions (tile sizes, unrolling) wherever the two
traces sample the same things in the same order; the postprocessors then run as after any
search. The grafts are timed the way the work directory times its records and committed as
records of the recipient, so the selection and later searches start from them too.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from . import selection
from .measuring import register_intrinsics
from .reuse import blocks
from .workdir import WorkDir

# Each donor's best few: a sibling's fastest tiles are what is worth trying here.
DONORS = 4
# Recipient records of distinct sketches (where the epilogue is computed, ...) each graft is tried on.
SKETCHES = 3


def graft_records(work_dir: WorkDir, tasks, target, space: Callable[[], object] | str = "post-order-apply",
                  on_kernel: Callable[[int, int], None] | None = None) -> int:
    """Commit, for every task, its siblings' best decisions grafted onto its own traces and timed;
    the number of records committed. Grafts already in the database are not made again.
    `space`: the search space the tasks were searched in (its postprocessors check each graft),
    or a function that makes one."""
    from tvm.s_tir import meta_schedule as ms
    groups = siblings(tasks)
    pairs = [(k, j) for group in groups for k in group for j in group if j != k]
    if not pairs:
        return 0
    register_intrinsics(target)
    database = work_dir.database()
    cold = work_dir.measurement(target.kind.name) == "cold"
    committed = 0
    recipients = sorted({k for k, _ in pairs})
    for i, k in enumerate(recipients):
        if on_kernel:
            on_kernel(i, len(recipients))
        mod = tasks[k].dispatched[0]
        if not database.has_workload(mod):
            continue
        workload = database.commit_workload(mod)
        own = database.get_top_k(workload, 10**6)
        seen = {_key(r.trace) for r in own}
        sketches = _sketches(own)
        postprocs = _postprocs(mod, target, space)
        grafts = []
        for j in (j for kk, j in pairs if kk == k):
            donor_mod = tasks[j].dispatched[0]
            if not database.has_workload(donor_mod):
                continue
            for donor in database.get_top_k(database.commit_workload(donor_mod), DONORS):
                for schedule in _grafts(donor.trace, sketches, mod, postprocs):
                    if _key(schedule.trace) not in seen:
                        seen.add(_key(schedule.trace))
                        # Its arguments as it reads them (weights repacked), as the search records them.
                        args = ms.arg_info.ArgInfo.from_entry_func(schedule.mod, remove_preproc=True)
                        grafts.append(ms.database.TuningRecord(schedule.trace, workload, None, target, args))
        for g, secs in selection.retime(grafts, target, cold=cold):
            record = grafts[g]
            database.commit_tuning_record(ms.database.TuningRecord(
                record.trace, workload, [secs], target, record.args_info))
            committed += 1
    return committed


def siblings(tasks) -> list[list[int]]:
    """Groups (two or more) of task indices whose kernels reduce over the same loops and shapes:
    the same conv (or Winograd GEMM, or matmul) with other epilogues."""
    by_anchor: dict[tuple, list[int]] = defaultdict(list)
    for k, task in enumerate(tasks):
        anchor = _anchor(task.dispatched[0])
        if anchor:
            by_anchor[anchor].append(k)
    return [group for group in by_anchor.values() if len(group) > 1]


def _anchor(mod) -> tuple:
    """Each reduction block of `mod`, in program order: its loop extents and the shapes it reads."""
    from tvm import tirx
    return tuple(
        (tuple(int(v.dom.extent) for v in node.iter_vars),
         tuple(tuple(int(d) for d in region.source.shape) for region in node.reads),
         tuple(str(region.source.dtype) for region in node.reads))
        for node in blocks(mod) if any(v.iter_type == tirx.IterVar.CommReduce for v in node.iter_vars)
    )


def _sketches(own: list) -> list[tuple[list, list]]:
    """One trace (instructions, without postprocessing) per sketch among `own` records, best
    record first, with what it samples."""
    out, seen = [], set()
    for record in own:
        insts, _ = record.trace.as_json(remove_postproc=True)
        sketch = _sketch(insts)
        if sketch not in seen:
            seen.add(sketch)
            out.append((insts, _samples(insts)))
    return out


def _grafts(donor, sketches: list[tuple[list, list]], mod, postprocs) -> list:
    """Schedules of `mod`: the donor trace's decisions on up to SKETCHES of `sketches` that sample
    what it samples, each checked by the postprocessors."""
    from tvm import s_tir
    from tvm.s_tir.schedule import Trace
    insts, decisions = donor.as_json(remove_postproc=True)
    theirs = dict((i, d) for i, d in decisions)
    wanted = _samples(insts)
    donors = _sampling(insts)
    out = []
    for ours, _ in [s for s in sketches if s[1] == wanted][:SKETCHES]:
        grafted = [[m, theirs[d]] for m, d in zip(_sampling(ours), donors) if d in theirs]
        schedule = s_tir.Schedule(mod)
        try:
            Trace.apply_json_to_schedule([ours, grafted], schedule)
            schedule.enter_postproc()  # as a search marks it: what follows is not the sketch's
            if all(p.apply(schedule) for p in postprocs):
                out.append(schedule)
        except Exception:  # noqa: BLE001 - TVM raises its own error types; such a graft is no schedule
            pass
    return out


def _sampling(insts: list) -> list[int]:
    """The positions of a trace's sampling instructions."""
    return [i for i, inst in enumerate(insts) if inst[0].startswith("Sample")]


def _samples(insts: list) -> list[tuple[str, str]]:
    """What a trace samples, in order: each sampling instruction's kind and attributes."""
    return [(insts[i][0], str(insts[i][2])) for i in _sampling(insts)]


def _sketch(insts: list) -> str:
    """A trace's structure without its block lookups and inlining (which differ between
    epilogues): what is split, reordered and computed where (at which loop of the last
    reorder), decisions aside."""
    sketch, order = [], []
    for kind, inputs, attrs, _ in insts:
        if kind in ("GetSBlock", "ComputeInline", "ReverseComputeInline"):
            continue
        if kind == "Reorder":
            order = list(inputs)
        moved = kind in ("ComputeAt", "ReverseComputeAt") and inputs[1] in order
        at = order.index(inputs[1]) if moved else None
        sketch.append((kind, str(attrs), at))
    return json.dumps(sketch)


def _key(trace) -> str:
    """What makes a schedule: its sketch and its decisions (a trace's variable names aside)."""
    insts, decisions = trace.as_json(remove_postproc=True)
    return json.dumps([_sketch(insts), sorted((int(i), str(d)) for i, d in decisions)])


def _postprocs(mod, target, space) -> list:
    """The postprocessors a search of `mod` for `target` in `space` runs, initialised for it."""
    from tvm.s_tir import meta_schedule as ms
    context = ms.TuneContext(mod=mod, target=target, space_generator=space() if callable(space) else space,
                             search_strategy="evolutionary", task_name="graft")
    return list(context.space_generator.postprocs)

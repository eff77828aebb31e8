"""`compile --target llvm|cuda`: a TVM shared library, built with the tuning records that apply.

The records are --tuned's work directory, else (llvm) the shipped database `databases.choose`
picks for the network, as `bench` does; `tvm` itself is imported only once a build starts. This
is the command line's side of resdsl/tvm, which speaks of options and never of flags: here a
work directory is named as the user gave it, with the flag that gave it.
"""
from __future__ import annotations

from pathlib import Path

from .diagnostics import ResdslError
from .targets import Job, Output
from .tvm import databases
from .tvm.lowering import Lowering
from .tvm.workdir import WorkDir


def work_dir(text: str, flag: str) -> WorkDir:
    """A work directory given on the command line: a path, or the name of a shipped database."""
    path = Path(text)
    if path.is_dir():
        return WorkDir(path)
    found = databases.shipped(text)
    if found is None:
        names = sorted(p.name for p in databases.root().glob("*-llvm*"))
        raise ResdslError(f"{flag} {text}: no such work directory, and no shipped database of that name",
                          hint=f"shipped databases: {', '.join(names) or 'none'}")
    return found


def repair(work: WorkDir, say) -> None:
    """A database a crash cut short or something damaged: readable again, nothing deleted."""
    for part in (work, work.selected):
        fixed = part.repair()
        if fixed.torn:
            say(f"note: dropped {fixed.torn} line(s) a crash cut short in {part.path}")
        if fixed.set_aside:
            say(f"note: set aside {fixed.set_aside} unreadable line(s) of {part.path} in {fixed.aside_path}")
        for problem in fixed.problems[:5]:  # file:line: why, for the first few
            say(f"note: {problem}")


def compile_library(job: Job) -> Output:
    from .tvm import build as tvm_build
    from .tvm.target import make_target
    o = job.options
    batch, work = o["batch"], None
    if o["tuned"]:
        work = work_dir(o["tuned"], "--tuned")
        repair(work, job.say)
    elif not o["untuned"]:
        # It belongs in this module: in output.py it closes the output -> tvm.databases -> output cycle.
        from .output import implicit_database
        work, batch, said = implicit_database(job.spec, job.net.name, job.target, o["cpu"], batch,
                                              o["layout"], o["winograd"], o["prepack"], o["wide_winograd"])
        for line in said:
            job.say(line)
    if batch is None and work is not None:
        report = work.report()
        batch = report.batch if report else 1  # records are specialised to the batch they were tuned at
    lowering = Lowering.resolve(job.target, o["layout"], o["winograd"], work, o["prepack"],
                                o["wide_winograd"])
    tvm_target = make_target(job.target, cpu=o["cpu"], arch=o["arch"])
    mod = tvm_build.relax_module(job.net.graph, job.weights, batch, lowering)
    executable = tvm_build.build(mod, tvm_target, work, lowering)

    def write(path: Path) -> None:
        tvm_build.export(executable, path)
        if o["cuda_source"] is not None:
            job.write(o["cuda_source"], "\n".join(tvm_build.cuda_sources(executable)))
    return Output(write, f"TVM {tvm_target.kind.name}, batch {batch or 'any'}, {job.net.name}")

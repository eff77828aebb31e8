"""`compile --target llvm|cuda`: a TVM shared library, built with the tuning records that apply.

The records are --tuned's work directory, else (llvm) the shipped database `databases.choose`
picks for the network, as `bench` does; `tvm` itself is imported only once a build starts. This
is the command line's side of resdsl/tvm, which speaks of options and never of flags: here a
work directory is named as the user gave it, with the flag that gave it.
"""
from __future__ import annotations

from pathlib import Path

from .diagnostics import OptionError, ResdslError, printable
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
        work, batch, said = implicit_database(job.spec, job.net.name, job.target, o["cpu"], batch,
                                              o["layout"], o["winograd"], o["prepack"], o["wide_winograd"],
                                              o["precision"])
        for line in said:
            job.say(line)
    if batch is None and work is not None:
        report = work.report()
        batch = report.batch if report else 1  # records are specialised to the batch they were tuned at
    lowering = Lowering.resolve(job.target, o["layout"], o["winograd"], work, o["prepack"],
                                o["wide_winograd"], precision=o["precision"])
    tvm_target = make_target(job.target, cpu=o["cpu"], arch=o["arch"])
    mod = tvm_build.relax_module(job.net.graph, job.weights, batch, lowering)
    executable = tvm_build.build(mod, tvm_target, work, lowering)

    def write(path: Path) -> None:
        tvm_build.export(executable, path)
        if o["cuda_source"] is not None:
            job.write(o["cuda_source"], "\n".join(tvm_build.cuda_sources(executable)))
    return Output(write, f"TVM {tvm_target.kind.name}, batch {batch or 'any'}, {job.net.name}")


def implicit_database(spec, network: str, target: str, cpu: str | None, batch: int | None,
                      layout: str | None, winograd: bool | None, prepack: bool | None,
                      wide_winograd: bool | None, precision: str | None = None):
    """The shipped database `compile --target llvm` applies when given no --tuned: the one
    `databases.choose` picks for the network and CPU (as bench does), with its lowering and batch
    (records apply only to kernels lowered alike, at the shapes they were tuned at).

    Returns (work_dir or None, batch, lines for stderr): a note naming the database and how to
    opt out, or a warning that the library runs untuned kernels, saying why and what to run."""
    opt_out = "--untuned builds without one"
    from .zoo import bundled
    ours = bundled().get(network)
    if ours is not None and Path(spec).resolve() == ours.resolve():
        spec = network  # the bundled model: its name is what the user typed, wherever it is installed
    tune = f"tune it with `resdsl tune {printable(str(spec))}" + (" --target cuda" if target == "cuda" else "") \
        + (f" --cpu {cpu}" if cpu else "") + "`, then compile with --tuned WORK_DIR"

    def untuned(why: str) -> str:
        return (f"warning: {why}: this library runs untuned kernels (~50-100x slower than tuned); {tune}, "
                f"or pass --untuned to build it untuned without this warning")
    if target != "llvm":
        return None, batch, [untuned(f"no tuning records for {network} on {target} (no databases ship for cuda)")]
    from .tvm.target import describe_machine, host_cpu, machine
    cpu_name = cpu or host_cpu()
    chosen = databases.choose(network, cpu_name, batch or 1, precision or "fp32")
    if chosen is None:
        tuned_at = databases.batches(network)
        if not tuned_at:
            return None, batch, [untuned(f"no tuning records for {network} (no shipped database for it)")]
        return None, batch, [untuned(f"the shipped databases for {network} were tuned at batch "
                                     f"{', '.join(map(str, tuned_at))}, not {batch or 1}, and records apply "
                                     "only at the batch they were tuned at")]
    tuned_batch = databases.tuned_batch(chosen)
    try:
        Lowering.resolve(target, layout, winograd, chosen, prepack, wide_winograd, precision=precision)
    except OptionError as exc:
        return None, batch, [untuned(f"the shipped database {chosen.name} does not apply: {exc}")]
    theirs = chosen.tuned_for()
    where = describe_machine(theirs) if theirs is not None else "an unrecorded machine"
    if theirs is not None and machine(theirs)[1] != cpu_name:
        where += f", not this {cpu_name}: another CPU's schedules, still far faster than none"
    batch_note = "" if batch is not None else f", at batch {tuned_batch} as tuned"
    note = f"note: applying the shipped database {chosen.name} (tuned on {where}){batch_note}; {opt_out}"
    return chosen, tuned_batch, [note]

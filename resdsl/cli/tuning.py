"""The TVM commands: `tune` (MetaSchedule search, a tuned library and its report) and `bench`
(latency of every engine the targets offer, side by side)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .. import targets
from .app import FLAGS, app
from .options import checked_weights, load, spec_argument, tvm_options, weight_options


@app.command()
@spec_argument
@click.option("--target", type=click.Choice([t.name for t in targets.TARGETS.values() if t.tunable]),
              default="llvm", show_default=True)
@click.option("--trials", type=click.IntRange(1, 10**6), default=512, show_default=True,
              help="measured candidates in all, across tasks and restarts")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False, dir_okay=True),
              help="holds the tuning database; rerun with the same one to resume "
                   "(default tune-NETWORK-TARGET)")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="tuned library (default WORK_DIR/NETWORK.so)")
@click.option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker that measures on remote devices")
@click.option("--rpc-key", help="the device key registered with the tracker")
@click.option("--max-tasks", type=click.IntRange(1, None),
              help="tune only the N kernels with the most FLOPs (the rest keep default schedules)")
@click.option("--reuse-records", "reuse", multiple=True,
              help="another work directory, or a shipped database's name, whose records for the same kernels "
                   "are copied in first (repeatable)")
@click.option("--select-top", type=click.IntRange(0, 64), default=16, show_default=True,
              help="CPU: time each kernel's K best records again, weights cold as in the network, and keep "
                   "the fastest (0: keep the recorded best)")
@click.option("-v", "--verbose", is_flag=True, help="show MetaSchedule's own log too")
@weight_options
@tvm_options
def tune(spec: Path, target: str, trials: int, work_dir: Path | None, output: Path | None,
         rpc_tracker: str | None, rpc_key: str | None, max_tasks: int | None, reuse: tuple[str, ...],
         select_top: int, verbose: bool,
         weights: Path | None, seed: int, batch: int | None, cpu: str | None, arch: str, layout: str | None,
         winograd: bool | None, wide_winograd: bool | None, prepack: bool | None,
         precision: str | None) -> None:
    """Tune a spec's kernels with MetaSchedule; write the tuned library and a JSON report."""
    net = load(spec)
    targets.check(target, net.graph)
    state = checked_weights(net, weights, seed)  # a bad file is refused before TVM loads (seconds)
    from ..tvm.measuring import RPC
    from ..tvm.target import make_target
    from ..tvm.tuning import TuneOptions, tune_network
    from ..tvm.workdir import WorkDir
    from ..tvm_compile import work_dir as named_work_dir
    from .display import tuning_display
    options = TuneOptions(
        trials=trials, batch=batch or 1, rpc=RPC.parse(rpc_tracker, rpc_key) if rpc_tracker else None,
        max_tasks=max_tasks, select_top=select_top, verbose=verbose,
        reuse=tuple(named_work_dir(str(r), "--reuse-records") for r in reuse),
        lowering={k: v for k, v in (("layout", layout), ("winograd", winograd),
                                    ("wide_winograd", wide_winograd), ("prepack", prepack),
                                    ("precision", precision)) if v is not None})
    work_dir = WorkDir(work_dir or Path(f"tune-{net.name}-{target}"))
    tvm_target = make_target(target, cpu=cpu, arch=arch)

    def note(message: str) -> None:
        print(f"note: {message}", file=sys.stderr)
    with tuning_display(net.name, target) as show:
        report = tune_network(net, state, tvm_target, work_dir, options, library=output, on_progress=show,
                              on_note=note)
    print(f"wrote {report.library} and {work_dir.report_path}"
          + (f"; whole network {report.latency_ms:.2f} ms (median)" if report.latency_ms else "")
          + (f", {report.ratio:.3f}x ONNX Runtime timed beside it" if report.ratio else ""), file=sys.stderr)


@app.command()
@spec_argument
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1, 1024), default=os.cpu_count() or 1, show_default=True,
              help="threads for every engine")
@click.option("--engines", default=",".join(targets.engines()),
              show_default=True, help="comma-separated subset to run")
@click.option("--tuned", multiple=True,
              help="a `resdsl tune` work directory, a shipped database's name or a tuned .so for the "
                   "tvm-tuned row; repeat it to compare several (default: of the shipped databases tuned "
                   "on this CPU, the one whose tuning run measured the lowest ratio to ONNX Runtime; else "
                   "the one tuned on the closest CPU: the same vector extension, then the most LLVM "
                   "features in common)")
@click.option("--budget", type=float, default=3.0, show_default=True, help="seconds of timed runs per engine")
@click.option("--rounds", type=click.IntRange(1, 50), default=5, show_default=True,
              help="the engines take turns, this many times, so drift in the machine's speed hits them alike")
@click.option("--cpu", help="LLVM CPU name for TVM (default: this host's)")
@click.option("--json", "as_json", is_flag=True, help="print JSON for machines")
@weight_options
def bench(spec: Path, batch: int, threads: int, engines: str, tuned: tuple[str, ...], budget: float,
          rounds: int,
          cpu: str | None, as_json: bool, weights: Path | None, seed: int) -> None:
    """Latency of PyTorch eager, torch.compile, ONNX Runtime and TVM (untuned, tuned) on one input."""
    selected = tuple(e.strip() for e in engines.split(",") if e.strip())
    unknown = [e for e in selected if e not in targets.engines()]
    if unknown:
        raise click.BadParameter(f"unknown engine(s) {', '.join(unknown)}; "
                                 f"choose from {', '.join(targets.engines())}",
                                 param_hint="--engines")
    net = load(spec)
    state = checked_weights(net, weights, seed)
    if "tvm-tuned" in selected:
        tuned = _tuned_for_bench(spec, net.name, tuned, cpu, threads, batch)
    say = (lambda r: None) if as_json else (lambda r: print(f"  {r.engine}: ready", file=sys.stderr))
    from ..bench import run_bench
    results = run_bench(net, state, batch, threads, selected, tuned, cpu, budget, rounds, on_ready=say)
    base = next((r.median_ms for r in results if r.engine == "onnxruntime" and r.median_ms), None)
    # Beyond batch 1 what a server cares for is throughput: images a second at the median latency.
    rows = [{**r.__dict__, "vs_onnxruntime": (r.median_ms / base) if base and r.median_ms else None,
             "images_per_s": batch * 1e3 / r.median_ms if r.median_ms else None}
            for r in results]
    if as_json:
        report = {"network": net.name, "batch": batch, "threads": threads, "results": rows}
        print(json.dumps(report, indent=1))
        return
    from .display import bench_table
    bench_table(f"{net.name}, batch {batch}, {threads} threads", rows)


def _tuned_for_bench(spec: Path, network: str, given: tuple[str, ...], cpu: str | None,
                     threads: int, batch: int) -> tuple:
    """The tvm-tuned rows' sources (WorkDir, or Path for a built .so), with a note where one was
    tuned on another machine (the CPU and the thread count both shape a schedule) or at another
    batch (its records do not apply: the row runs untuned kernels)."""
    from ..tvm import databases
    from ..tvm.target import describe_machine, host_cpu, machine, make_target
    from ..tvm_compile import work_dir as named_work_dir
    cpu = cpu or host_cpu()
    ours = make_target("llvm", cpu=cpu, cores=threads)  # refuses a CPU LLVM does not know
    sources = tuple(Path(t) if t.endswith(".so") and Path(t).is_file() else named_work_dir(t, "--tuned")
                    for t in given)
    if not sources and (shipped := databases.choose(network, cpu, batch)):
        sources = (shipped,)
    elif not sources and (tuned_at := databases.batches(network)):
        print(f"note: no shipped database for {network} at batch {batch} (they are tuned at batch "
              f"{', '.join(map(str, tuned_at))}); tune one with `resdsl tune {spec} --batch {batch} "
              f"--reuse-records WORK_DIR_OR_DATABASE` and bench with --tuned WORK_DIR", file=sys.stderr)
    for source in sources:
        if not isinstance(source, Path) and (theirs := databases.tuned_batch(source)) != batch:
            print(f"note: {source.path} was tuned at batch {theirs}, not {batch}: its records do not apply, "
                  "so its row runs untuned kernels", file=sys.stderr)
        theirs = None if isinstance(source, Path) else source.tuned_for()
        if theirs is None or machine(theirs) == machine(ours):
            continue
        _, their_cpu, their_threads = machine(theirs)
        if their_cpu == cpu:
            fix = f"bench with --threads {their_threads} to run them as tuned"
        else:
            fix = f"tune for this one with `{_retune_command(spec, network, cpu, source)}`"
        print(f"note: {source.path} was tuned on {describe_machine(theirs)}, not {describe_machine(ours)}: "
              f"its schedules are that machine's best; {fix}", file=sys.stderr)
    return sources


def _retune_command(spec: Path, network: str, cpu: str, source) -> str:
    """The `resdsl tune` command that makes `source`'s counterpart for `cpu`: the same variant and
    lowering (records only apply to kernels lowered alike), seeded from its chosen records."""
    from ..tvm import databases
    from ..tvm.lowering import Lowering
    lowering = source.lowering() or Lowering.default("llvm")
    flags = [_flag(option, value) for option, value in lowering.options("llvm").items()]
    seed = source.selected if source.selected.has_records() else source
    seed_name = seed.name if seed.path.parent == databases.root() else seed.path
    work_dir = databases.counterpart(source, network, cpu)
    return " ".join([f"resdsl tune {spec}", *flags, f"--work-dir {work_dir}", f"--reuse-records {seed_name}"])


def _flag(option: str, value) -> str:
    """`layout`, "NHWC" -> `--layout nhwc`; `winograd`, False -> `--no-winograd`."""
    flag = FLAGS[option]
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {str(value).lower()}"

"""The command line: the only module that prints or exits.

Exit codes: 0 success, 1 a user error (located message on stderr), 2 an internal error.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import click

from .diagnostics import OptionError, ResdslError, printable

TARGETS = ("torch", "onnx", "llvm", "cuda")
SUFFIX = {"torch": ".py", "onnx": ".onnx", "llvm": ".so", "cuda": ".so"}
WRITES = {".py": "Python source", ".onnx": "an ONNX model", ".so": "a shared library"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resdsl")
def app() -> None:
    """resdsl: compile residual-network specs (.rds) to PyTorch, ONNX and TVM."""
    from .limits import LIMITS
    LIMITS.check_environment()  # a bad RESDSL_MAX_* is reported before any work starts


def _parse_sets(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    sets: dict[str, str] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip():
            raise click.BadParameter(f"expected NAME=EXPR, got {item!r}", param_hint="--set")
        sets[name.strip()] = value.strip()
    ctx.meta["resdsl.sets"] = sets
    return sets


def _resolve_spec(ctx, param, value: Path) -> Path:
    from .zoo import resolve
    return resolve(value)


def spec_argument(f):
    """The spec (a file, or a bundled model's name: `resdsl list`), and `--set NAME=EXPR` to replace
    its `let` constants (read by `_load`)."""
    f = click.option(
        "--set",
        "sets",
        multiple=True,
        callback=_parse_sets,
        expose_value=False,
        metavar="NAME=EXPR",
        help="replace the network's `let NAME` with EXPR (repeatable), e.g. --set n=18; "
             "`classes=N` and `input=CxHxW` (or `HxW`, keeping the channels) replace the header",
    )(f)
    return click.argument("spec", type=click.Path(path_type=Path), callback=_resolve_spec)(f)


def _load(spec: Path):
    from .network import load
    ctx = click.get_current_context()
    _require_extras(ctx.command.name, ctx.params)
    return load(spec, ctx.meta.get("resdsl.sets"))


def _require_extras(command: str, params: dict) -> None:
    """Every spec command loads through `_load` first: a missing optional part is named there with
    its `pip install 'resdsl[...]'` line, before an import of it could end in a traceback."""
    from .extras import require
    target = params.get("target")
    if command == "compile" and target in ("onnx", "llvm", "cuda"):
        require("onnx" if target == "onnx" else "tvm", purpose=f"compile --target {target}")
    elif command == "tune":
        require("tvm", purpose="resdsl tune")
    elif command == "bench":
        engines = {e.strip() for e in params.get("engines", "").split(",")}
        rows = "leave its row out with --engines"
        require("torch", purpose="resdsl bench")
        if "onnxruntime" in engines:
            require("onnx", "onnx", "onnxruntime", purpose=f"bench's onnxruntime engine ({rows})")
        if engines & {"tvm", "tvm-tuned"}:
            require("tvm", "tvm", purpose=f"bench's tvm engines ({rows})")
    elif command == "train":
        data = params.get("data", "")
        require("train", "torch", purpose="resdsl train")
        if data == "digits":
            require("train", "sklearn", purpose="the digits dataset (from scikit-learn)")
        elif data.startswith("folder:"):
            require("train", "PIL", purpose="reading images (with Pillow)")


@app.command()
@spec_argument
def check(spec: Path) -> None:
    """Check a spec: parse, infer shapes, legalize shortcuts; print one line of facts."""
    net = _load(spec)
    g = net.graph
    from .ops import fmt_shape
    from .ir import INPUT
    if g.outputs:
        out = ", ".join(f"{name} {fmt_shape(g.shape(node))}" for name, node in g.outputs)
    else:
        out = f"{g.classes} classes" if g.outputs_classes() else f"{fmt_shape(g.shape(g.output))} feature map"
    print(f"{spec}: OK {net.name}: {fmt_shape(g.shape(INPUT))} -> {out}, "
          f"{len(g.blocks)} blocks in {len(g.stages)} stages, {net.params:,} params, "
          f"{net.macs / 1e9:.2f} GMACs")


@app.command()
@spec_argument
@click.option("--json", "as_json", is_flag=True,
              help="print JSON for machines: every layer whatever --depth, the memory totals in bytes, "
                   "and with --depth the roll-ups as `rows`")
@click.option("--depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="roll layers up to N levels of their dotted names, as torchinfo does: 0 the network, "
                   "1 stem/stages/head (`layer1`), 2 blocks (`layer1.0`), ... (default: every layer)")
def summary(spec: Path, as_json: bool, depth: int | None) -> None:
    """A per-layer table of shapes, parameters, MACs and activation memory (float32, batch 1)."""
    from .summary import COLUMNS, NUMERIC, cells, memory_lines, plain_table, rows, summary_data
    net = _load(spec)
    data = summary_data(net.graph, depth)
    if as_json:
        print(json.dumps(data, indent=1))
        return
    outputs = "; ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in data["outputs"].items())
    title = f"{net.name}: {data['params']:,} params, {data['macs'] / 1e9:.2f} GMACs"
    table = [cells(r) for r in rows(net.graph, depth)]
    from rich.console import Console
    from rich.table import Table
    console = Console()
    widths = [max(len(column), *(len(row[i]) for row in table)) for i, column in enumerate(COLUMNS)]
    widths[0] = min(widths[0], 24)  # in a terminal a long name folds onto a second line, never cut
    if not sys.stdout.isatty() or sum(widths) + 3 * len(widths) + 1 > console.width:
        # a pipe, a file, or a terminal too narrow for the table: plain aligned text, nothing cut
        print("\n".join([title, *plain_table(table), f"outputs: {outputs}", *memory_lines(data["memory"])]))
        return
    rich_table = Table(title=title, title_justify="left", caption=f"outputs: {outputs}",
                       caption_justify="left")
    for column, width in zip(COLUMNS, widths):
        rich_table.add_column(column, justify="right" if column in NUMERIC else "left", overflow="fold",
                              no_wrap=column != "layer", min_width=width)
    for row in table:
        rich_table.add_row(*row)
    console.print(rich_table)
    console.print("\n".join(memory_lines(data["memory"])), highlight=False)


follow_option = click.option("--follow-symlinks", is_flag=True,
                             help="if an output is a symbolic link, write the file it points to "
                                  "(default: refuse)")


def weight_options(f):
    f = click.option("--weights", type=click.Path(path_type=Path),
                     help="a state_dict saved from the generated torch module, checked against the spec "
                          "(every key and shape; finite real floats) before anything is written (default: "
                          "seeded init); --target torch checks it only, as its source holds no weights")(f)
    f = click.option("--seed", type=int, default=0, show_default=True,
                     help="seed of the random init (not with --weights)")(f)
    return f


def _check_backend(net, target: str) -> None:
    """The target's backend lists the ops it cannot lower before anything else runs: weights
    are made by the torch module, which would otherwise be the one to refuse, in its own words."""
    if target == "onnx":
        from .backends.onnx_export import check
    else:
        from .tvm.relax_frontend import check
    check(net.graph)


def _weights(net, weights: Path | None, seed: int) -> dict:
    """The weights every target runs: FILE checked against the network, or the seeded init.
    A --seed beside --weights would be ignored, so it is refused rather than silently dropped."""
    from click.core import ParameterSource
    if weights is not None and click.get_current_context().get_parameter_source("seed") \
            is ParameterSource.COMMANDLINE:
        raise ResdslError("--seed and --weights both set the weights",
                          hint="give --weights FILE for trained weights, or --seed N for a seeded init")
    from .extras import require
    require("torch", purpose="reading or initialising weights")
    from .backends.weights import load_weights
    return load_weights(net.graph, weights, seed)


def tvm_options(f):
    f = click.option("--batch", type=click.IntRange(1, 4096),
                     help="batch size to specialise the TVM build to (default: any batch untuned; with "
                          "--tuned, the batch its records were tuned at)")(f)
    f = click.option("--cpu", help="LLVM CPU name for --target llvm (default: this host's)")(f)
    f = click.option("--arch", default="sm_90", show_default=True, help="CUDA architecture")(f)
    f = click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False),
                     help="activation layout inside the TVM build (default: nhwc for llvm, nchw for cuda, "
                          "or what the --tuned/--work-dir records were tuned with)")(f)
    f = click.option("--winograd/--no-winograd", default=None,
                     help="3x3 stride-1 convs of up to 128x128 channels as Winograd F(4x4,3x3) (llvm only; "
                          "needs nhwc; default on for llvm, or what the --tuned/--work-dir records were "
                          "tuned with)")(f)
    f = click.option("--wide-winograd/--no-wide-winograd", default=None,
                     help="with --winograd, 3x3 convs of up to 256x256 channels too, as Winograd F(2x2,3x3) "
                          "(default: off, or what the --tuned/--work-dir records were tuned with)")(f)
    f = click.option("--prepack/--no-prepack", default=None,
                     help="store each tuned kernel's weights in the order it reads them (llvm only; "
                          "default on for llvm, or what the --tuned/--work-dir records were tuned with)")(f)
    return f


@app.command()
@spec_argument
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="torch: Python source; onnx: an ONNX model; llvm/cuda: a TVM shared library "
                   "(default: the one -o's suffix names, .py .onnx .so (llvm) .cuda.so; else torch)")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="output file (default NETWORK.py, NETWORK.onnx, NETWORK.llvm.so, NETWORK.cuda.so: "
                   "a library's dotted name never shadows the module in `import NETWORK`; - for stdout "
                   "with torch)")
@weight_options
@tvm_options
@click.option("--tuned", "tuned", help="a `resdsl tune` work directory, or the name of a shipped database, "
                                     "whose records to apply (llvm/cuda; default for llvm: the shipped "
                                     "database for the network that bench uses, if there is one)")
@click.option("--untuned", is_flag=True, help="llvm/cuda: build with no tuning records, not even a shipped "
                                              "database (kernels keep TVM's default schedules)")
@click.option("--cuda-source", type=click.Path(path_type=Path), help="also write the generated CUDA C source")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset for --target onnx: 17 up to the newest the installed ONNX Runtime runs")
@follow_option
def compile(spec: Path, target: str, output: Path | None, weights: Path | None, seed: int, batch: int | None,
            cpu: str | None, arch: str, layout: str | None, winograd: bool | None, wide_winograd: bool | None,
            prepack: bool | None, tuned: str | None, untuned: bool, cuda_source: Path | None, opset: int,
            follow_symlinks: bool) -> None:
    """Compile a spec for a target.

    The onnx, llvm and cuda outputs carry the weights of --weights FILE (checked against the spec
    first). The torch target writes source, which holds no weights: FILE is checked the same way,
    and the module loads it with model.load_state_dict(torch.load(FILE, weights_only=True)).
    --target llvm applies the shipped tuning database for the network where there is one (saying
    which; --untuned builds without it) and warns when it builds untuned kernels.
    """
    from .output import refuse_shadowing, target_for
    target = click.get_current_context().params["target"] = target_for(output, target)
    net = _load(spec)
    from functools import partial
    from .output import destination, write_atomic
    write_atomic = partial(write_atomic, inputs=net.files, follow_symlinks=follow_symlinks)
    if output is not None and str(output) != "-":
        _check_suffix(output, target)
    if opset != 17 and target != "onnx":
        raise ResdslError(f"--opset applies to --target onnx, not {target}")
    if untuned and (tuned or target in ("torch", "onnx")):
        raise ResdslError("--untuned builds a TVM library without --tuned's records" if tuned else
                          f"--untuned applies to --target llvm or cuda, not {target}")
    if target == "torch":
        from click.core import ParameterSource
        from .backends.torch_codegen import generate
        if click.get_current_context().get_parameter_source("seed") is ParameterSource.COMMANDLINE:
            raise ResdslError("--seed does not apply to --target torch: the generated module holds no "
                              "weights", hint="seed its initialisation in Python: build(seed=N)")
        if weights is not None:
            _weights(net, weights, seed)  # refused before anything is written
        source = generate(net.graph, source_name=spec.name)
        if output is not None and str(output) == "-":
            sys.stdout.write(source)
        else:
            path = output or _default_output(net.name, target)
            refuse_shadowing(path)
            write_atomic(path, source)
            print(f"wrote {path} ({net.name}, {net.params:,} params)", file=sys.stderr)
        if weights is not None:
            print(f"note: checked {printable(str(weights))}: it fits {net.name}; the module holds no "
                  f"weights, so load them: model.load_state_dict(torch.load("
                  f"{printable(repr(str(weights)))}, weights_only=True))", file=sys.stderr)
        return
    if output is not None and str(output) == "-":
        raise ResdslError(f"--target {target} writes a binary file, not text for stdout",
                          hint=f"give a file name, e.g. -o {_default_output(net.name, target)}")
    path = output or _default_output(net.name, target)
    destination(path, inputs=net.files, follow_symlinks=follow_symlinks)  # refuse before a long build
    refuse_shadowing(path)
    if target == "onnx":  # an opset out of range is refused before the weights are read
        from .backends.onnx_export import check_opset
        check_opset(opset)
    _check_backend(net, target)
    state = _weights(net, weights, seed)
    if target == "onnx":
        from .backends.onnx_export import spec_metadata, to_onnx
        meta = spec_metadata(net.files[0] if net.files else spec, includes=net.files[1:],
                             overrides=click.get_current_context().meta.get("resdsl.sets"))
        write_atomic(path, to_onnx(net.graph, state, opset=opset, metadata=meta).SerializeToString())
        print(f"wrote {path} (ONNX opset {opset}, {net.name})", file=sys.stderr)
        return
    from .tvm import build as tvm_build
    from .tvm.lowering import Lowering
    from .tvm.target import make_target
    work_dir = _work_dir(tuned, "--tuned") if tuned else None
    if work_dir is not None:
        _repair(work_dir)
    elif not untuned:
        from .output import implicit_database
        work_dir, batch, said = implicit_database(spec, net.name, target, cpu, batch, layout, winograd, prepack,
                                                  wide_winograd)
        for line in said:
            print(line, file=sys.stderr)
    if batch is None and work_dir is not None:
        report = work_dir.report()
        batch = report.batch if report else 1  # records are specialised to the batch they were tuned at
    lowering = Lowering.resolve(target, layout, winograd, work_dir, prepack, wide_winograd)
    tvm_target = make_target(target, cpu=cpu, arch=arch)
    mod = tvm_build.relax_module(net.graph, state, batch, lowering)
    executable = tvm_build.build(mod, tvm_target, work_dir, lowering)
    tvm_build.export(executable, destination(path, inputs=net.files, follow_symlinks=follow_symlinks))
    if cuda_source is not None:
        write_atomic(cuda_source, "\n".join(tvm_build.cuda_sources(executable)))
    print(f"wrote {path} (TVM {tvm_target.kind.name}, batch {batch or 'any'}, {net.name})", file=sys.stderr)


def _check_suffix(path: Path, target: str) -> None:
    """An output named for another target (`-o net.onnx` with the default torch) would get a
    file of the wrong kind, and exit 0: refused, naming the target the name asks for."""
    suffix = path.suffix.lower()
    owners = [t for t, s in SUFFIX.items() if s == suffix]
    if owners and target not in owners:
        raise ResdslError(f"-o {printable(path.name)} asks for {WRITES[suffix]}, but --target {target} "
                          f"writes {WRITES[SUFFIX[target]]}",
                          hint=f"pass --target {' or --target '.join(owners)}, or name the output "
                               f"{printable(path.with_suffix(SUFFIX[target]).name)}")


def _repair(work_dir) -> None:
    """A database a crash cut short or something damaged: readable again, nothing deleted."""
    for part in (work_dir, work_dir.selected):
        repair = part.repair()
        if repair.torn:
            print(f"note: dropped {repair.torn} line(s) a crash cut short in {part.path}", file=sys.stderr)
        if repair.set_aside:
            print(
                f"note: set aside {repair.set_aside} unreadable line(s) of {part.path} "
                f"in {repair.aside_path}",
                file=sys.stderr,
            )
        for problem in repair.problems[:5]:  # file:line: why, for the first few
            print(f"note: {problem}", file=sys.stderr)


def _default_output(name: str, target: str) -> Path:
    """NETWORK.py / .onnx / .llvm.so / .cuda.so in the working directory (`output.DEFAULT_SUFFIXES`:
    the libraries' dotted names never shadow NETWORK.py), unless NETWORK.py would shadow an
    importable module: after writing torch.py there, `import torch` there would import it."""
    from .output import default_name
    path = default_name(name, target)
    suffix = path.suffix
    if path.name == f"{name}.py" and _importable(name):
        raise ResdslError(f"the default output name {path} would shadow the Python module `{name}`",
                          hint=f"name the output with -o, e.g. -o {name}_net{suffix}")
    return path


def _importable(name: str) -> bool:
    import importlib.machinery
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    here = {"", ".", os.getcwd()}
    elsewhere = [p for p in sys.path if p not in here]  # a module here is likely our own earlier output
    return importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None


def _work_dir(text: str, flag: str):
    """A work directory given on the command line: a path, or the name of a shipped database."""
    from .tvm import databases
    from .tvm.workdir import WorkDir
    path = Path(text)
    if path.is_dir():
        return WorkDir(path)
    found = databases.shipped(text)
    if found is None:
        names = sorted(p.name for p in databases.root().glob("*-llvm*"))
        raise ResdslError(f"{flag} {text}: no such work directory, and no shipped database of that name",
                          hint=f"shipped databases: {', '.join(names) or 'none'}")
    return found


@app.command()
@spec_argument
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
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
         winograd: bool | None, wide_winograd: bool | None, prepack: bool | None) -> None:
    """Tune a spec's kernels with MetaSchedule; write the tuned library and a JSON report."""
    net = _load(spec)
    _check_backend(net, target)
    state = _weights(net, weights, seed)  # a bad file is refused before TVM loads (seconds)
    from .tvm.target import make_target
    from .tvm.tuning import RPC, TuneOptions, tune_network
    from .tvm.workdir import WorkDir
    options = TuneOptions(
        trials=trials, batch=batch or 1, rpc=RPC.parse(rpc_tracker, rpc_key) if rpc_tracker else None,
        max_tasks=max_tasks, select_top=select_top, verbose=verbose,
        reuse=tuple(_work_dir(str(r), "--reuse-records") for r in reuse),
        lowering={k: v for k, v in (("layout", layout), ("winograd", winograd),
                                    ("wide_winograd", wide_winograd), ("prepack", prepack)) if v is not None})
    work_dir = WorkDir(work_dir or Path(f"tune-{net.name}-{target}"))
    tvm_target = make_target(target, cpu=cpu, arch=arch)

    def note(message: str) -> None:
        print(f"note: {message}", file=sys.stderr)
    with _progress_display(net.name, target) as show:
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
@click.option("--engines", default=",".join(("torch", "torch.compile", "onnxruntime", "tvm", "tvm-tuned")),
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
    from . import bench as benchmod
    selected = tuple(e.strip() for e in engines.split(",") if e.strip())
    unknown = [e for e in selected if e not in benchmod.ENGINES]
    if unknown:
        raise click.BadParameter(f"unknown engine(s) {', '.join(unknown)}; "
                                 f"choose from {', '.join(benchmod.ENGINES)}",
                                 param_hint="--engines")
    net = _load(spec)
    state = _weights(net, weights, seed)
    if "tvm-tuned" in selected:
        tuned = _tuned_for_bench(spec, net.name, tuned, cpu, threads)
    say = (lambda r: None) if as_json else (lambda r: print(f"  {r.engine}: ready", file=sys.stderr))
    results = benchmod.run_bench(net, state, batch, threads, selected, tuned, cpu, budget, rounds,
                                 on_ready=say)
    base = next((r.median_ms for r in results if r.engine == "onnxruntime" and r.median_ms), None)
    rows = [{**r.__dict__, "vs_onnxruntime": (r.median_ms / base) if base and r.median_ms else None}
            for r in results]
    if as_json:
        report = {"network": net.name, "batch": batch, "threads": threads, "results": rows}
        print(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{net.name}, batch {batch}, {threads} threads", title_justify="left")
    for column in ("engine", "median ms", "min–max ms", "runs", "× ONNX Runtime", "max rel. error"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for row in rows:
        if row["median_ms"] is None:
            table.add_row(row["engine"], "-", "-", "-", "-", row["note"])
            continue
        table.add_row(row["engine"], f"{row['median_ms']:.2f}", f"{row['min_ms']:.2f}–{row['max_ms']:.2f}",
                      str(row["runs"]), f"{row['vs_onnxruntime']:.2f}" if row["vs_onnxruntime"] else "-",
                      f"{row['rel_err']:.1e}")
    Console().print(table)


def _tuned_for_bench(spec: Path, network: str, given: tuple[str, ...], cpu: str | None,
                     threads: int) -> tuple:
    """The tvm-tuned rows' sources (WorkDir, or Path for a built .so), with a note where one was
    tuned on another machine: the CPU and the thread count both shape a schedule."""
    from .tvm import databases
    from .tvm.target import describe_machine, host_cpu, machine, make_target
    cpu = cpu or host_cpu()
    ours = make_target("llvm", cpu=cpu, cores=threads)  # refuses a CPU LLVM does not know
    sources = tuple(Path(t) if t.endswith(".so") and Path(t).is_file() else _work_dir(t, "--tuned")
                    for t in given)
    if not sources and (shipped := databases.choose(network, cpu)):
        sources = (shipped,)
    for source in sources:
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
    from .tvm import databases
    from .tvm.lowering import Lowering
    lowering = source.lowering() or Lowering.default("llvm")
    flags = [_flag(option, value) for option, value in lowering.options("llvm").items()]
    seed = source.selected if source.selected.has_records() else source
    seed_name = seed.name if seed.path.parent == databases.root() else seed.path
    work_dir = databases.counterpart(source, network, cpu)
    return " ".join([f"resdsl tune {spec}", *flags, f"--work-dir {work_dir}", f"--reuse-records {seed_name}"])


# How the command line spells the library's options, for OptionError's help.
FLAGS = {"layout": "--layout", "winograd": "--winograd", "wide_winograd": "--wide-winograd",
         "prepack": "--prepack", "cpu": "--cpu", "arch": "--arch", "target": "--target",
         "rpc_tracker": "--rpc-tracker", "rpc_key": "--rpc-key"}


def _flag(option: str, value) -> str:
    """`layout`, "NHWC" -> `--layout nhwc`; `winograd`, False -> `--no-winograd`."""
    flag = FLAGS[option]
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {str(value).lower()}"


@app.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="exit 1 if a file would change; write nothing")
@click.option("--write", is_flag=True, help="rewrite the files in place")
def fmt(specs: tuple[Path, ...], check: bool, write: bool) -> None:
    """Format .rds files in the one canonical style (comments kept); print them by default."""
    from .files import read_source
    from .formatter import format_source
    from .output import write_atomic
    changed = []
    for spec in specs:
        text = read_source(spec)
        formatted = format_source(text, str(spec))
        if formatted != text:
            changed.append(spec)
            if write and not check:
                write_atomic(spec, formatted, follow_symlinks=True)  # rewriting the spec is the point
        if not check and not write:
            sys.stdout.write(formatted)
    if check:
        for spec in changed:
            print(f"would reformat {spec}", file=sys.stderr)
        if changed:
            raise click.exceptions.Exit(1)
    elif write:
        print(f"reformatted {len(changed)} of {len(specs)} file(s)", file=sys.stderr)


@app.command()
@spec_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="FILE.svg, FILE.png, FILE.pdf or FILE.dot")
@click.option("--collapse", is_flag=True, help="draw each stage once, with its repeat count")
@follow_option
def graph(spec: Path, output: Path, collapse: bool, follow_symlinks: bool) -> None:
    """A picture of the checked graph (Graphviz)."""
    net = _load(spec)
    from functools import partial
    from .backends.graphviz_render import to_dot
    from .output import write_atomic
    write_atomic = partial(write_atomic, inputs=net.files, follow_symlinks=follow_symlinks)
    dot = to_dot(net.graph, collapse=collapse)
    fmt = output.suffix.lstrip(".").lower()
    if fmt == "dot":
        write_atomic(output, dot.source)
    elif fmt in ("svg", "png", "pdf"):
        import graphviz
        try:
            write_atomic(output, dot.pipe(format=fmt))
        except graphviz.ExecutableNotFound:
            raise ResdslError("Graphviz's `dot` program is not installed",
                              hint="install it (apt-get install graphviz, brew install graphviz), "
                                   "or write -o FILE.dot and render it elsewhere") from None
    else:
        raise ResdslError(f"cannot tell the picture format from `{output.name}`",
                          hint="end the output name in .svg, .png, .pdf or .dot")
    print(f"wrote {output}", file=sys.stderr)


@app.command()
@spec_argument
def show(spec: Path) -> None:
    """Print a spec, syntax-highlighted on a colour terminal."""
    from .files import read_source
    from .highlight import highlight, use_colour
    text = read_source(spec)
    sys.stdout.write(highlight(text) if use_colour() else text)


@app.command()
@spec_argument
@click.option(
    "--data",
    required=True,
    help="cifar10 or cifar100 (downloaded once into $RESDSL_DATA_DIR, default ~/.cache/resdsl/data), "
         "cifar10:DIR or cifar100:DIR (python-version batches), folder:DIR (DIR/train|test/CLASS/*, "
         "streamed from disk) or digits",
)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="the run directory: config.json, metrics.jsonl/.csv, TensorBoard events, checkpoint.pt, "
                   "best.pt, final.pt; rerun to resume")
@click.option("--epochs", type=click.IntRange(1, 100000),
              help="default: 164 for CIFAR (the paper's 64k iterations at batch 128), 30 for digits; "
                   "a larger one extends a run")
@click.option("--batch", type=click.IntRange(1, 65536), default=128, show_default=True,
              help="the global batch: under torchrun it is split over the processes")
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True),
              help="the peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
@click.option("--schedule", type=click.Choice(["step", "cosine"]), default="step", show_default=True,
              help="step: divided by 10 at 50% and 75% of the iterations (the paper's); cosine: per "
                   "iteration from --lr to 0 (timm's)")
@click.option("--warmup-epochs", type=click.IntRange(0, 100000), default=0, show_default=True,
              help="rise linearly from ~0 to --lr over this many epochs, per iteration, before the schedule")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1), help="SGD's only (default 0.9)")
@click.option("--weight-decay", type=click.FloatRange(0, 1),
              help="default: 1e-4 for sgd (the paper's), 0.05 for adamw (timm's)")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="of the training loss (timm's recipes use 0.1); test loss is plain cross-entropy")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="mixed precision (default: off, float32): bf16 on CPU or CUDA, fp16 with a gradient "
                   "scaler on CUDA only")
@click.option("--init", "init", type=click.Path(path_type=Path), metavar="WEIGHTS",
              help="start from this state_dict (another run's final.pt or best.pt) instead of the seeded "
                   "init; a classifier head for another class count is re-initialised")
@click.option("--augment/--no-augment", default=None,
              help="4-pixel padding, random crop, horizontal flip (default: on for CIFAR, off for digits)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda where a GPU exists")
@click.option("--workers", type=click.IntRange(0, 256), default=2, show_default=True,
              help="processes decoding folder: images (0: in the training process); results do not depend on it")
def train(spec: Path, data: str, out: Path, epochs: int | None, batch: int, lr: float | None, schedule: str,
          warmup_epochs: int, optimizer: str, momentum: float | None, weight_decay: float | None,
          label_smoothing: float, amp: str | None, init: Path | None, augment: bool | None, seed: int,
          device: str, workers: int) -> None:
    """Train a spec on a dataset, by default with the paper's recipe; resumable, with metrics per epoch.

    Rerun with the same --out to resume, or with a larger --epochs to extend a run (its schedule is
    recomputed for the new total). Under `torchrun --nproc-per-node N -m resdsl train ...` it trains
    data-parallel (gloo on CPU, NCCL with --device cuda)."""
    net = _load(spec)
    from .extras import require
    require("train", "tensorboardX", purpose="resdsl train's TensorBoard log")
    from .files import read_source
    from .training.data import load_dataset
    from .training.distributed import World
    from .training.loop import Recipe, train as train_loop
    world = World.from_env()
    recipe = Recipe(epochs=epochs or 0, batch=batch, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs,
                    label_smoothing=label_smoothing, amp=amp, init=init and str(init), seed=seed,
                    device=device)  # checked before the data is read
    dataset = load_dataset(data, stream=True)
    cifar = dataset.name.startswith("cifar")
    from dataclasses import replace
    recipe = replace(recipe, epochs=epochs or (164 if cifar else 30),
                     augment=cifar if augment is None else augment)

    def epoch_line(row: dict) -> None:
        print(
            f"epoch {row['epoch']}/{recipe.epochs}: train loss {row['train_loss']:.3f} error "
            f"{100 * row['train_error']:.2f}%, test error {100 * row['test_error']:.2f}%, "
            f"lr {row['lr']:.3g}, "
            f"{row['images_per_s']:.0f} images/s",
            file=sys.stderr,
            flush=True,
        )

    def note(message: str) -> None:
        print(f"note: {message}", file=sys.stderr, flush=True)
    if not world.leader:  # the leader speaks for the run
        train_loop(net, read_source(spec), str(spec), dataset, data, out, recipe, world=world, workers=workers)
        return
    with _training_display(net.name, recipe.epochs) as (on_batch, on_epoch):
        rows = train_loop(net, read_source(spec), str(spec), dataset, data, out, recipe, on_batch,
                          lambda row: (on_epoch(row), epoch_line(row)), world, note, workers)
    last = rows[-1] if rows else None
    print(f"wrote {out / 'final.pt'}" + (f"; test error {100 * last['test_error']:.2f}%" if last else ""),
          file=sys.stderr)


@contextmanager
def _training_display(name: str, epochs: int):
    """A live bar (epoch, loss, images/s, time left) on a terminal; epoch lines otherwise."""
    if not sys.stderr.isatty():
        yield (lambda *a: None), (lambda row: None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(f"training {name}", total=epochs, info="")

        def on_batch(epoch: int, i: int, loss: float) -> None:
            bar.update(task, info=f"epoch {epoch}, batch {i}, loss {loss:.3f}")

        def on_epoch(row: dict) -> None:
            bar.update(task, completed=row["epoch"],
                       info=f"test error {100 * row['test_error']:.2f}%, {row['images_per_s']:.0f} images/s")
        yield on_batch, on_epoch


@app.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="FILE.png, .svg or .pdf")
def plot(runs: tuple[Path, ...], output: Path) -> None:
    """Training (dashed) and test (solid) error of training runs against iterations, as in the paper."""
    from .extras import require
    require("train", "matplotlib", purpose="resdsl plot")
    from .training.plot import plot_runs
    plot_runs(list(runs), output)
    print(f"wrote {output}", file=sys.stderr)


@app.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="print JSON for machines")
def list_models(pattern: str, as_json: bool) -> None:
    """The bundled models, each usable by name wherever a SPEC is taken (`resdsl check resnet50`):
    name, params, GMACs, input and the library it reproduces. PATTERN is shell-style: 'resnet*'."""
    from .zoo import catalogue, format_table
    rows = catalogue(pattern)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        sys.stdout.write(format_table(rows))


def _progress_display(name: str, target: str):
    """Trials done, tasks, best latency so far, time left: a rich bar on a terminal, else log lines."""
    if not sys.stderr.isatty():
        return _progress_log(name, target)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    @contextmanager
    def display():
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("trials · {task.fields[tasks]} tasks · best {task.fields[best]}"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        with Progress(*columns, transient=False, refresh_per_second=2) as bar:
            task = bar.add_task(f"tuning {name} ({target})", total=None, tasks="?", best="-")

            def show(p) -> None:
                best = f"{p.best_ms:.2f} ms" if p.best_ms is not None else "-"
                bar.update(task, description=f"{p.stage} {name} ({target})", total=p.total,
                           completed=min(p.done, p.total), tasks=p.tasks, best=best)
            yield show
    return display()


LOG_EVERY_S = 60.0


@contextmanager
def _progress_log(name: str, target: str):
    """For a tuning run in the background (`nohup ... > log`), where a live bar never draws:
    a line at every change of stage, and one a minute while it searches."""
    state: dict = {}

    def line(p) -> str:
        elapsed = time.monotonic() - p.started
        text = (f"{p.stage} {name} ({target}): {min(p.done, p.total)}/{p.total} trials, {p.tasks} tasks, "
                f"best {f'{p.best_ms:.2f} ms' if p.best_ms is not None else '-'}, "
                f"{int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed")
        first = state.setdefault("first", (p.done, time.monotonic()))
        rate = (p.done - first[0]) / max(time.monotonic() - first[1], 1e-9)
        if p.stage == "tuning" and rate > 0 and p.done < p.total:
            text += f", ~{(p.total - p.done) / rate / 60:.0f} min left ({rate:.2f} trials/s)"
        return text

    def say(p) -> None:
        text = line(p)
        if text != state.get("said"):
            print(text, file=sys.stderr, flush=True)
        state.update(stage=p.stage, at=time.monotonic(), said=text)

    def show(p) -> None:
        if p.stage != state.get("stage") or time.monotonic() - state["at"] >= LOG_EVERY_S:
            say(p)
        state["latest"] = p
    yield show
    if "latest" in state:
        say(state["latest"])  # where it ended


def main(argv: list[str] | None = None) -> int:
    try:
        # Outside standalone mode click returns (not raises) the code of an Exit.
        code = app.main(args=argv, prog_name="resdsl", standalone_mode=False)
        sys.stdout.flush()  # here, where a full disk or a closed pipe can still be reported
        return code if isinstance(code, int) else 0
    except OptionError as exc:
        flags = ", ".join(FLAGS.get(o, o) for o in exc.options)
        print(exc.render().rstrip() + f"\n   = note: command-line options: {flags}", file=sys.stderr)
        return 1
    except ResdslError as exc:
        from .highlight import use_colour
        rank = os.environ.get("RANK", "0")  # under torchrun every process reports, the leader plainly
        prefix = "" if rank == "0" else f"[rank {printable(rank)}] "
        print(prefix + exc.render(colour=use_colour(sys.stderr)), file=sys.stderr)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except click.ClickException as exc:  # bad command-line usage is a user error too
        exc.show()
        return 1
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # writing stdout or stderr failed
            _discard_stdout()
            print(f"resdsl: cannot write the output: {exc.strerror}", file=sys.stderr)
            return 1
        traceback.print_exc()
        print("resdsl: internal error (a bug in resdsl, not in your spec); please report it "
              "with the traceback above", file=sys.stderr)
        return 2
    except Exception:  # anything else is our bug
        traceback.print_exc()
        print("resdsl: internal error (a bug in resdsl, not in your spec); please report it "
              "with the traceback above", file=sys.stderr)
        return 2


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())

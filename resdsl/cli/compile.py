"""`compile`: a spec to a file for one target, through the target registry (`resdsl.targets`).

What is common to every target lives here: the output's name and kind, options meant for another
target, the weights, writing atomically. What differs is the target's entry: its check, its
option validation and its compile function.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import click

from .. import targets
from ..diagnostics import ResdslError, printable
from ..output import destination, refuse_shadowing, write_atomic
from .app import app
from .options import checked_weights, follow_option, load, spec_argument, tvm_options, weight_options


@app.command()
@spec_argument
@click.option("--target", type=click.Choice(tuple(targets.TARGETS)), default=None,
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
def compile(spec: Path, target: str | None, output: Path | None, weights: Path | None, seed: int,
            follow_symlinks: bool, **options) -> None:
    """Compile a spec for a target.

    The onnx, llvm and cuda outputs carry the weights of --weights FILE (checked against the spec
    first). The torch target writes source, which holds no weights: FILE is checked the same way,
    and the module loads it with model.load_state_dict(torch.load(FILE, weights_only=True)).
    --target llvm applies the shipped tuning database for the network where there is one (saying
    which; --untuned builds without it) and warns when it builds untuned kernels.
    """
    ctx = click.get_current_context()
    target = ctx.params["target"] = targets.target_for(output, target)
    net = load(spec)
    if output is not None and str(output) != "-":
        _check_suffix(output, target)
    _refuse_other_targets_options(ctx, target, options)
    job = targets.Job(target, spec, net, options, say=lambda line: print(line, file=sys.stderr),
                      write=partial(write_atomic, inputs=net.files, follow_symlinks=follow_symlinks),
                      sets=ctx.meta.get("resdsl.sets"))
    if targets.get(target).weights:
        _write_with_weights(job, output, weights, seed, follow_symlinks)
    else:
        _write_source(job, output, weights, seed)


def _refuse_other_targets_options(ctx: click.Context, target: str, options: dict) -> None:
    """An option only other targets take (`--opset` with --target torch), set to anything but its
    default, would be ignored: refused, naming the targets it is for."""
    if options["untuned"] and options["tuned"]:
        raise ResdslError("--untuned builds a TVM library without --tuned's records")
    params = {p.name: p for p in ctx.command.params}
    for name in dict.fromkeys(n for t in targets.TARGETS.values() for n in t.options):
        owners = [t.name for t in targets.TARGETS.values() if name in t.options]
        if target not in owners and options[name] != params[name].get_default(ctx):
            flag = params[name].opts[0]
            raise ResdslError(f"{flag} applies to --target {' or '.join(owners)}, not {target}")


def _write_source(job: targets.Job, output: Path | None, weights: Path | None, seed: int) -> None:
    """A target that writes source holds no weights: --weights FILE is checked only, and the user
    is told how to load it."""
    from click.core import ParameterSource
    net = job.net
    if click.get_current_context().get_parameter_source("seed") is ParameterSource.COMMANDLINE:
        raise ResdslError(f"--seed does not apply to --target {job.target}: the generated module holds no "
                          "weights", hint="seed its initialisation in Python: build(seed=N)")
    targets.check(job.target, net.graph)
    if weights is not None:
        checked_weights(net, weights, seed)  # refused before anything is written
    out = targets.get(job.target).function("compile")(job)
    if output is not None and str(output) == "-":
        sys.stdout.write(out.data)
    else:
        path = output or _default_output(net.name, job.target)
        refuse_shadowing(path)
        job.write(path, out.data)
        print(f"wrote {path} ({out.summary})", file=sys.stderr)
    if weights is not None:
        print(f"note: checked {printable(str(weights))}: it fits {net.name}; the module holds no "
              f"weights, so load them: model.load_state_dict(torch.load("
              f"{printable(repr(str(weights)))}, weights_only=True))", file=sys.stderr)


def _write_with_weights(job: targets.Job, output: Path | None, weights: Path | None, seed: int,
                        follow_symlinks: bool) -> None:
    """A binary file carrying the weights: its name, options and graph refused before the
    weights are read and long before a build."""
    net, target = job.net, targets.get(job.target)
    if output is not None and str(output) == "-":
        raise ResdslError(f"--target {target.name} writes a binary file, not text for stdout",
                          hint=f"give a file name, e.g. -o {_default_output(net.name, target.name)}")
    path = output or _default_output(net.name, target.name)
    destination(path, inputs=net.files, follow_symlinks=follow_symlinks)  # refuse before a long build
    refuse_shadowing(path)
    if target.validate is not None:
        target.function("validate")(job)
    targets.check(target.name, net.graph)
    job = replace(job, weights=checked_weights(net, weights, seed))
    out = target.function("compile")(job)
    if callable(out.data):  # it writes the file itself
        out.data(destination(path, inputs=net.files, follow_symlinks=follow_symlinks))
    else:
        job.write(path, out.data)
    print(f"wrote {path} ({out.summary})", file=sys.stderr)


def _check_suffix(path: Path, target: str) -> None:
    """An output named for another target (`-o net.onnx` with the default torch) would get a
    file of the wrong kind, and exit 0: refused, naming the target the name asks for."""
    suffix = path.suffix.lower()
    owners = [t.name for t in targets.TARGETS.values() if t.file_suffix == suffix]
    ours = targets.get(target)
    if owners and target not in owners:
        theirs = targets.get(owners[0])
        raise ResdslError(f"-o {printable(path.name)} asks for {theirs.writes}, but --target {target} "
                          f"writes {ours.writes}",
                          hint=f"pass --target {' or --target '.join(owners)}, or name the output "
                               f"{printable(path.with_suffix(ours.file_suffix).name)}")


def _default_output(name: str, target: str) -> Path:
    """NETWORK.py / .onnx / .llvm.so / .cuda.so in the working directory (`resdsl.targets`:
    the libraries' dotted names never shadow NETWORK.py), unless NETWORK.py would shadow an
    importable module: after writing torch.py there, `import torch` there would import it."""
    path = targets.default_name(name, target)
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

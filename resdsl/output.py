"""Writing outputs: atomically, and only where writing cannot destroy something else.

A failure never leaves a half-written file behind (the data goes to a temporary file beside the
destination, which then replaces it). A destination that is not a regular file (a directory, a
device such as /dev/full, a FIFO) is refused rather than replaced, and so is a symbolic link
unless the caller asks to write through it: replacing the link would lose it, writing through
it may land anywhere. A destination that is one of the inputs (`compile x.rds -o x.rds`) is
refused too. OS errors become user errors naming the file.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from .diagnostics import ResdslError, printable


def destination(
    path: str | Path, *, inputs: Iterable[str | Path] = (), follow_symlinks: bool = False
) -> Path:
    """The file that writing `path` will replace, after refusing the destinations above."""
    path = Path(path)
    shown = printable(str(path))
    if path.is_symlink():
        if not follow_symlinks:
            raise ResdslError(f"{shown} is a symbolic link; resdsl does not write through links unless asked",
                              hint="pass --follow-symlinks to write to the file it points to, "
                                   "or choose another output name")
        path = Path(os.path.realpath(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ResdslError(f"cannot write {shown}: {exc.strerror or exc}") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise ResdslError(f"{shown} is a directory", hint="give a file name, e.g. -o DIR/NAME")
        if not stat.S_ISREG(info.st_mode):
            raise ResdslError(f"{shown} is not a regular file; resdsl will not replace it",
                              hint="write to a regular file and copy it where it must go")
        for source in inputs:
            try:
                same = os.path.samefile(path, source)
            except OSError:
                same = False
            if same:
                raise ResdslError(f"{shown} is an input of this command; writing it would destroy it",
                                  hint="choose another output name with -o")
    return path


def write_atomic(path: str | Path, data: str | bytes, *, inputs: Iterable[str | Path] = (),
                 follow_symlinks: bool = False) -> None:
    path = destination(path, inputs=inputs, follow_symlinks=follow_symlinks)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ResdslError(f"cannot write {printable(str(path))}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ResdslError(f"cannot write {printable(str(path))}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What `compile` writes, and the names it writes by default. The scheme: torch NETWORK.py,
# onnx NETWORK.onnx, llvm NETWORK.llvm.so, cuda NETWORK.cuda.so. Python imports `x` from the
# first of x.cpython-3XY-PLATFORM.so, x.abi3.so, x.so, x.py it finds in a directory (extension
# modules before source), so a TVM library named x.so beside x.py makes `import x` load the
# library and fail with an ImportError. A name whose stem holds a dot is no module name at all:
# the default libraries can sit beside the default torch module, and `import x` loads the .py.
DEFAULT_SUFFIXES = {"torch": ".py", "onnx": ".onnx", "llvm": ".llvm.so", "cuda": ".cuda.so"}
# The target an output's name asks for when --target is not given (longest suffix first).
SUFFIX_TARGETS = ((".llvm.so", "llvm"), (".cuda.so", "cuda"), (".py", "torch"), (".onnx", "onnx"),
                  (".so", "llvm"))


def default_name(network: str, target: str) -> Path:
    return Path(f"{network}{DEFAULT_SUFFIXES[target]}")


def target_for(output: str | Path | None, target: str | None) -> str:
    """--target as given; else the one `-o`'s suffix names; else (no -o, or stdout) torch.
    A given target whose kind of file the name contradicts is refused by the caller
    (`_check_suffix`); here only .llvm.so against cuda and .cuda.so against llvm."""
    name = None if output is None or str(output) == "-" else Path(output).name.lower()
    named = next((t for suffix, t in SUFFIX_TARGETS if name and name.endswith(suffix)), None)
    if target is None:
        if name is None:
            return "torch"
        if named is None and (Path(output).is_dir() or Path(output).is_char_device()):
            return "torch"  # /dev/null, a directory: `destination` says why it is refused
        if named is None:
            known = ", ".join(f"{s} ({t})" for s, t in SUFFIX_TARGETS)
            raise ResdslError(f"-o {printable(Path(output).name)}: cannot tell the target from its suffix",
                              hint=f"pass --target {'|'.join(DEFAULT_SUFFIXES)}, or name the output "
                                   f"with one of {known}")
        return named
    if named in ("llvm", "cuda") and target in ("llvm", "cuda") and named != target \
            and name.endswith(DEFAULT_SUFFIXES[named]):
        raise ResdslError(f"-o {printable(Path(output).name)} names a {named} library, but --target is {target}",
                          hint=f"pass --target {named}, or name the output "
                               f"{printable(Path(output).name[:-len(DEFAULT_SUFFIXES[named])])}"
                               f"{DEFAULT_SUFFIXES[target]}")
    return target


def _module_name(name: str) -> tuple[str, str] | None:
    """(module, suffix) where a file called `name` is one Python imports as `module`."""
    import importlib.machinery
    for suffix in sorted({*importlib.machinery.EXTENSION_SUFFIXES, *importlib.machinery.SOURCE_SUFFIXES},
                         key=len, reverse=True):
        if name.endswith(suffix) and name[:-len(suffix)].isidentifier():
            return name[:-len(suffix)], suffix
    return None


def refuse_shadowing(path: str | Path) -> None:
    """Refuse an output that `import x` would confuse with a file beside it: a library x.so
    (or x.abi3.so, ...) beside x.py shadows the module; x.py beside such a library is shadowed."""
    import importlib.machinery
    path = Path(path)
    found = _module_name(path.name)
    if found is None:
        return
    module, suffix = found
    extension = suffix in importlib.machinery.EXTENSION_SUFFIXES
    others = importlib.machinery.SOURCE_SUFFIXES if extension else importlib.machinery.EXTENSION_SUFFIXES
    for other in others:
        sibling = path.with_name(module + other)
        if sibling.exists():
            library, source = (path, sibling) if extension else (sibling, path)
            stem = DEFAULT_SUFFIXES["llvm"]
            raise ResdslError(
                f"{printable(str(path))} beside {printable(str(sibling))}: `import {module}` there would load "
                f"the library {printable(library.name)}, not the module {printable(source.name)}",
                hint=f"name the library {printable(module)}{stem} (or .cuda.so): a dotted stem is never "
                     f"imported as a module")


def implicit_database(spec, network: str, target: str, cpu: str | None, batch: int | None,
                      layout: str | None, winograd: bool | None, prepack: bool | None,
                      wide_winograd: bool | None):
    """The shipped database `compile --target llvm` applies when given no --tuned: the one
    `databases.choose` picks for the network and CPU (as bench does), with its lowering and batch
    (records apply only to kernels lowered alike, at the shapes they were tuned at).

    Returns (work_dir or None, batch, lines for stderr): a note naming the database and how to
    opt out, or a warning that the library runs untuned kernels, saying why and what to run."""
    from .diagnostics import OptionError
    from .tvm.lowering import Lowering
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
    from .tvm import databases
    from .tvm.target import describe_machine, host_cpu, machine
    cpu_name = cpu or host_cpu()
    chosen = databases.choose(network, cpu_name)
    if chosen is None:
        return None, batch, [untuned(f"no tuning records for {network} (no shipped database for it)")]
    report = chosen.report()
    tuned_batch = report.batch if report else 1
    try:
        Lowering.resolve(target, layout, winograd, chosen, prepack, wide_winograd)
    except OptionError as exc:
        return None, batch, [untuned(f"the shipped database {chosen.name} does not apply: {exc}")]
    if batch is not None and batch != tuned_batch:
        return None, batch, [untuned(f"the shipped database {chosen.name} was tuned at batch {tuned_batch}, "
                                     f"not {batch}, and its records apply only there")]
    theirs = chosen.tuned_for()
    where = describe_machine(theirs) if theirs is not None else "an unrecorded machine"
    if theirs is not None and machine(theirs)[1] != cpu_name:
        where += f", not this {cpu_name}: another CPU's schedules, still far faster than none"
    batch_note = "" if batch is not None else f", at batch {tuned_batch} as tuned"
    note = f"note: applying the shipped database {chosen.name} (tuned on {where}){batch_note}; {opt_out}"
    return chosen, tuned_batch, [note]

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


# The default names (`targets.default_name`): torch NETWORK.py, onnx NETWORK.onnx, llvm
# NETWORK.llvm.so, cuda NETWORK.cuda.so. Python imports `x` from the
# first of x.cpython-3XY-PLATFORM.so, x.abi3.so, x.so, x.py it finds in a directory (extension
# modules before source), so a TVM library named x.so beside x.py makes `import x` load the
# library and fail with an ImportError. A name whose stem holds a dot is no module name at all:
# the default libraries can sit beside the default torch module, and `import x` loads the .py.
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
            from .targets import TARGETS
            stem = TARGETS["llvm"].suffix
            raise ResdslError(
                f"{printable(str(path))} beside {printable(str(sibling))}: `import {module}` there would load "
                f"the library {printable(library.name)}, not the module {printable(source.name)}",
                hint=f"name the library {printable(module)}{stem} (or .cuda.so): a dotted stem is never "
                     f"imported as a module")

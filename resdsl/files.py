"""Reading files resdsl did not write: regular files only, bounded, and never executed.

Every file a user hands resdsl (a spec, a dataset, weights, a run directory, a tuning
database) is read through here, as SQLite and Pillow treat theirs: a FIFO must not block, a
device must not be read forever, a directory is not a file, and nothing is read past a
size set in `limits`. What the bytes mean is checked by the caller; what fails here is a
`ResdslError` naming the file.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

from .diagnostics import ResdslError, Span, printable
from .limits import BOUNDS, LIMITS

# O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"


def read_bytes(path: str | Path, limit: str, *, what: str = "file", span: Span | None = None,
               missing_hint: str | None = None, directory_hint: str | None = None) -> bytes:
    """The whole of a regular file, refused past the bound `limit` (a key of `limits.BOUNDS`).

    `what` names the file in messages ("spec file", "weights file"); the hints are for a file
    that does not exist and for a directory in its place.
    """
    cap = getattr(LIMITS, limit)
    shown = printable(str(path))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ResdslError(f"file not found: {shown}", span, hint=missing_hint or "check the path") from None
    except IsADirectoryError:
        raise ResdslError(f"{shown} is a directory, not a {what}", span,
                          hint=directory_hint or f"name a {what}") from None
    except OSError as exc:
        raise ResdslError(f"cannot read {shown}: {exc.strerror}", span,
                          hint="check the file's permissions") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ResdslError(f"{shown} is a directory, not a {what}", span,
                              hint=directory_hint or f"name a {what}")
        raise ResdslError(f"{shown} is not a regular file", span,
                          hint=f"resdsl reads each {what} from a regular file only "
                               f"(not a device, FIFO or socket)")
    with os.fdopen(fd, "rb") as f:
        too_large = ResdslError(
            f"{shown} is larger than resdsl reads ({_size_text(cap)})", span,
            hint=f"raise {BOUNDS[limit].variable} if you really mean it")
        if info.st_size > cap:  # refused before a byte is read
            raise too_large
        # The file was opened non-blocking; a regular file reads the same either way. read(n)
        # allocates n bytes up front, so it is asked for the size fstat gave (and a file growing
        # under us is read on, in steps, still bounded), never for the cap itself.
        try:
            parts, total, step = [], 0, info.st_size + 1
            while total <= cap:
                part = f.read(min(step, cap + 1 - total))
                if not part:
                    break
                parts.append(part)
                total += len(part)
                step = 1 << 20
            data = b"".join(parts)
        except OSError as exc:
            raise ResdslError(f"cannot read {shown}: {exc.strerror}", span) from None
    if len(data) > cap:
        raise too_large
    return data


def read_text(path: str | Path, limit: str, *, what: str = "file", span: Span | None = None,
              missing_hint: str | None = None) -> str:
    """A regular file as UTF-8 text; NUL bytes or other encodings are refused without echoing."""
    data = read_bytes(path, limit, what=what, span=span, missing_hint=missing_hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResdslError(f"{printable(str(path))} is not UTF-8 text ({exc.reason})", span,
                          hint=f"is this a {what}?") from None


def open_bytes(path: str | Path, limit: str, *, what: str = "file",
               missing_hint: str | None = None) -> io.BytesIO:
    """A bounded regular file as an in-memory stream, for readers that want a file object
    (`torch.load`, `pickle`, PIL) and must never see a FIFO or a device."""
    return io.BytesIO(read_bytes(path, limit, what=what, missing_hint=missing_hint))


def read_source(path: str | Path, span: Span | None = None) -> str:
    """A spec file's text. Text with NUL bytes is not a spec (and /proc/self/environ is made of
    them), so it is refused without being echoed, pointing at the first NUL."""
    data = read_bytes(path, "max_spec_bytes", what="spec file", span=span,
                      missing_hint="check the path; includes are relative to the including file",
                      directory_hint="name a .rds file")
    shown = printable(str(path))
    if b"\0" in data:
        if span is None:  # point at the byte, without echoing the line: this is not a spec's text
            at = data.index(b"\0")
            line, column = data.count(b"\n", 0, at) + 1, at - (data.rfind(b"\n", 0, at) + 1) + 1
            span = Span(str(path), line, column, line, column + 1)
        raise ResdslError(f"{shown} is not a spec: it holds NUL bytes", span,
                          hint="a spec is UTF-8 text; include only .rds files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResdslError(f"{shown} is not UTF-8 text ({exc.reason})", span,
                          hint="save the spec as UTF-8") from None


def brief(text: str, at: int = 120) -> str:
    """Text from a file, made safe to quote: control characters escaped, cut at `at` characters
    (a key or a name in a crafted file may be megabytes long)."""
    text = printable(text[:4 * at])
    return text if len(text) <= at else text[:at - 1] + "…"


def load_torch(path: str | Path, *, what: str, hint: str, missing_hint: str | None = None,
               map_location: Any = "cpu") -> Any:
    """What a file torch.save wrote holds, loaded without running any of it.

    Bounded by RESDSL_MAX_WEIGHTS_BYTES, then only the zip archive torch.save has written since
    PyTorch 1.6, with uncompressed records that fit in the file, then torch's `weights_only`
    unpickler (tensors, numbers, strings and containers; no other global). The shape of what
    comes back is the caller's to check.
    """
    import torch
    stream = open_bytes(path, "max_weights_bytes", what=what, missing_hint=missing_hint)
    _check_archive(path, stream, hint)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the file is judged here
            warnings.simplefilter("ignore")
            return torch.load(stream, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file it cannot read
        # Never torch's own advice to retry with weights_only=False: that is how a file runs code.
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise DamagedFile(path, f"asks to run `{brief(refused[1])}`, which no {what} holds; resdsl "
                                    f"loads tensors, numbers and containers only, and ran nothing",
                              hint=hint) from None
        raise DamagedFile(path, f"not a {what} torch can read ({type(exc).__name__}: {brief(str(exc))})",
                          hint=hint) from None


def _check_archive(path: str | Path, stream: io.BytesIO, hint: str) -> None:
    """torch.load inflates a compressed record to whatever size the archive claims (a megabyte
    can ask for a terabyte), and the pre-1.6 format allocates the sizes its pickle names before
    reading them. torch.save writes neither, so both are refused, as are records claiming more
    bytes than the file holds."""
    problem = None
    if stream.read(4) != b"PK\x03\x04":
        problem = "not a file torch.save writes (a zip archive; a file saved before PyTorch 1.6 must be saved again)"
    else:
        try:
            with zipfile.ZipFile(stream) as archive:
                records = archive.infolist()
            if any(r.compress_type != zipfile.ZIP_STORED for r in records):
                problem = "holds compressed records, which torch.save never writes"
            elif (claimed := sum(r.file_size for r in records)) > len(stream.getbuffer()):
                problem = (f"a damaged zip archive: its records claim {claimed:,} bytes, "
                           f"the file holds {len(stream.getbuffer()):,}")
        except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, NotImplementedError, struct.error...
            problem = f"a damaged zip archive ({brief(str(exc))})"
    stream.seek(0)
    if problem:
        raise DamagedFile(path, problem, hint=hint)


def is_regular(path: str | Path) -> bool:
    """Whether `path` is a regular file (after symlinks), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class DamagedFile(ResdslError):
    """A file that reads but does not hold what it should; the message names the file and,
    where there is one, the line."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None,
                 hint: str | None = None) -> None:
        where = printable(str(path)) + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path, self.line, self.problem = Path(path), line, problem


def read_json(path: str | Path, limit: str = "max_record_bytes", *, what: str = "JSON file",
              hint: str | None = None) -> Any:
    """A regular file of one JSON value. Its shape is the caller's to check."""
    text = read_text(path, limit, what=what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DamagedFile(path, f"not valid JSON ({_reason(exc)})", hint=hint) from None


def json_lines(path: str | Path, limit: str = "max_record_bytes", *,
               what: str = "JSON-lines file") -> Iterator[tuple[int, bytes, Any | ValueError]]:
    """(line number, raw line, value or the ValueError it raised) for each non-blank line.

    A damaged line is handed back rather than raised, so the caller decides: a torn last line
    after a kill is dropped, a damaged line elsewhere is set aside or refused by name.
    """
    data = read_bytes(path, limit, what=what)
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value: Any = json.loads(line)
        except (ValueError, RecursionError) as exc:  # deep nesting is damage too, not a crash
            value = ValueError(_reason(exc))
        yield number, line, value


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return type(exc).__name__

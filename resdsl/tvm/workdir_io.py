"""The files under a work directory, read and written without trusting them: a gzipped file
decompressed no further than RESDSL_MAX_RECORD_BYTES, damaged lines appended aside never through
a link or into a FIFO, and resdsl's own JSON files read bounded and checked for shape.
`workdir.WorkDir` is their one user, and the owner of the format."""
from __future__ import annotations

import math
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import files
from ..diagnostics import ResdslError, printable
from ..limits import BOUNDS, LIMITS

SHIPPED_HINT = ("a shipped database is read as a whole and never rewritten: reinstall resdsl, "
                 "or point RESDSL_DATABASES at an intact copy")


def present(path: Path) -> bool:
    """Whether something is there: a FIFO or a dangling link is, to be refused when read."""
    return path.exists() or path.is_symlink()


def gunzip(path: Path) -> bytes:
    """A gzipped file's contents, decompressed no further than the cap: a few kilobytes of
    gzip can hold gigabytes of zeros."""
    data = files.read_bytes(path, "max_record_bytes", what="gzipped tuning database file")
    cap = LIMITS.max_record_bytes
    out = bytearray()
    try:
        while data:  # one gzip member after another, as gzip itself reads them
            member = zlib.decompressobj(wbits=31)
            while not member.eof:
                chunk = member.decompress(data, _STEP)
                data = member.unconsumed_tail
                if not chunk and not data:
                    break  # the input ran out before the member's end
                out += chunk
                if len(out) > cap:
                    variable = BOUNDS["max_record_bytes"].variable
                    raise ResdslError(f"{printable(str(path))} decompresses to more than resdsl reads "
                                      f"({cap:,} bytes)", hint=f"raise {variable} if you really mean it")
            if not member.eof:
                raise files.DamagedFile(path, "the gzip data ends early", hint=SHIPPED_HINT)
            data = member.unused_data
    except zlib.error as exc:
        raise files.DamagedFile(path, f"not valid gzip data ({exc})", hint=SHIPPED_HINT) from None
    return bytes(out)


_STEP = 1 << 20  # decompressed bytes at a time


def append_aside(path: Path, data: bytes) -> None:
    """Append to a `.corrupt` file: a regular file or none, never through a link or into a FIFO."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT
             | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise ResdslError(f"cannot set damaged lines aside in {printable(str(path))}: {exc.strerror}",
                          hint="it must be a regular file, or not exist") from None
    with os.fdopen(fd, "ab") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResdslError(f"cannot set damaged lines aside in {printable(str(path))}: not a regular file",
                              hint="it must be a regular file, or not exist")
        f.write(data)


def read(path: Path, parse: Callable[[Any], Any]):
    """One of resdsl's own JSON files, read bounded and checked for shape by `parse` (which
    raises ValueError saying what is wrong): damage is a user error naming the file."""
    value = files.read_json(path, "max_record_bytes", what="tuning file", hint=_REWRITE_HINT)
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise files.DamagedFile(path, str(exc), hint=_REWRITE_HINT) from None


_REWRITE_HINT = "restore it, or delete it and rerun `resdsl tune` on this directory"


def cache_setting(value: Any) -> str:
    if not (isinstance(value, dict) and value.get("cache") in ("cold", "hot")):
        raise ValueError('it should be {"cache": "cold"} or {"cache": "hot"}')
    return value["cache"]


def choices_summary(value: Any) -> dict:
    """`{"top_k": K, "choices": [{"name", "rank", "selected_ms", ...}, ...]}`, as `selection` writes it."""
    if not (isinstance(value, dict) and type(value.get("top_k")) is int
            and isinstance(value.get("choices"), list)):
        raise ValueError('it should be {"top_k": K, "choices": [...]}')
    for i, choice in enumerate(value["choices"]):
        ms = choice.get("selected_ms") if isinstance(choice, dict) else None
        if not (isinstance(choice, dict) and isinstance(choice.get("name"), str)
                and type(choice.get("rank")) is int and choice["rank"] >= 0
                and isinstance(ms, (int, float)) and not isinstance(ms, bool)
                and math.isfinite(ms) and ms >= 0):
            raise ValueError(f"choice {i} is not {{\"name\": ..., \"rank\": N, \"selected_ms\": T, ...}}")
    return value

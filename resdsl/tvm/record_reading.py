"""Step 2 of checking MetaSchedule's two files: TVM's own reading of each line that passed
step 1 (`record_lines`), in a forked child.

What TVM itself rejects, or crashes on, is found there rather than in this process. A line is
read there once per process, and a line TVM read cleanly once per machine (the verdicts are
kept in the user's cache directory).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..diagnostics import printable
from .record_lines import WORKLOAD_FILE, Line

# The kernel of a record is applied in a child process; a line TVM takes this long over is not
# one it wrote (a record takes ~30 ms, a workload less).
TVM_SECONDS_PER_LINE = 120

# Verdicts of TVM's reading by digest of the line (a record's with its workload's):
# None where TVM read it, else the problem.
_VERDICTS: dict[bytes, str | None] = {}


def _read_cache() -> Path | None:
    """Where the digests of lines this TVM has read cleanly are kept between processes: the
    user's own cache directory (never the work directory, which is the untrusted input).

    Reading a record costs TVM ~30 ms in the child, a minute for a 2000-record search; a line
    TVM read once it reads again, so each line pays that once per machine, not per command.
    `RESDSL_CACHE_DIR` moves it; `RESDSL_CACHE_DIR=` (empty) turns it off."""
    from ..resources import cache_root
    if os.environ.get("RESDSL_CACHE_DIR") == "":
        return None
    import tvm
    return cache_root() / f"tvm-{re.sub(r'[^0-9A-Za-z.]', '_', tvm.__version__)}-lines-read"


def _load_cached_verdicts() -> None:
    path = _read_cache()
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            # A damaged cache only costs a re-check: lines that are not digests are skipped.
            _VERDICTS.update((bytes.fromhex(h.decode()), None) for h in f.read(64 << 20).split()
                             if len(h) == 64 and re.fullmatch(rb"[0-9a-f]{64}", h))
    except OSError:
        pass


def _save_verdicts(found: dict[bytes, str | None]) -> None:
    path = _read_cache()
    clean = [key.hex() for key, problem in found.items() if problem is None]
    if path is None or not clean:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as f:  # appends from two processes interleave whole lines
            f.write("".join(h + "\n" for h in clean))
    except OSError:
        pass  # no cache: the next command checks again


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def tvm_check(records: list[Line], good: dict[int, Line]) -> None:
    """Have TVM read each line that passed step 1 and is not known yet (`good`: those workloads
    by index; `records`: the record lines, where still without a problem); mark what it refuses."""
    keys = {i: _digest(b"W", line.raw) for i, line in good.items()}
    if not _VERDICTS:
        _load_cached_verdicts()
    todo_records = []
    for line in records:
        if line.problem is None:
            key = _digest(b"R", keys[line.value[0]], line.raw)
            if key not in _VERDICTS:
                todo_records.append((key, line))
    needed = {line.value[0] for _, line in todo_records} | {i for i, k in keys.items() if k not in _VERDICTS}
    if needed:
        workloads = [(keys[i], good[i].raw, i) for i in sorted(needed)]
        todo = [(key, line.raw, line.value[0]) for key, line in todo_records]
        found = tvm_problems(workloads, todo)
        _VERDICTS.update(found)
        _save_verdicts(found)
    for i, line in good.items():
        line.problem = _VERDICTS.get(keys[i])
    for line in records:
        if line.problem is None:
            workload = keys[line.value[0]]
            line.problem = (f"its workload (line {line.value[0] + 1} of {WORKLOAD_FILE}) is damaged"
                            if _VERDICTS.get(workload) else _VERDICTS.get(_digest(b"R", workload, line.raw)))


def tvm_problems(workloads: list[tuple[bytes, bytes, int]],
                 records: list[tuple[bytes, bytes, int]]) -> dict[bytes, str | None]:
    """TVM's verdict on each (key, line, workload index) of `workloads`, then of `records`
    (whose index is one of `workloads`'): None, or what it said.

    TVM reads them in a forked child, as `JSONDatabase` would, and reports each line on a pipe
    as it goes. If the child dies (TVM crashed on the line after the last one reported) or
    stops making progress, that line is marked and a new child carries on after it; past
    MAX_CRASHES, the file is taken for a crafted one and the lines not yet read are marked too.
    """
    import tvm  # noqa: F401 - registers the functions the child calls

    from . import bf16
    bf16.register()  # reading a record applies its trace, and a bf16 kernel's names our intrinsic
    items = [("W", *w) for w in workloads] + [("R", *r) for r in records]
    verdicts: dict[bytes, str | None] = {}
    if not hasattr(os, "fork"):  # no child to risk: the shape check stands alone
        return verdicts
    start = crashes = 0
    while start < len(items):
        failed = _run_child(items, start, verdicts)
        if failed is None:
            break
        crashes += 1
        start = failed + 1
        if crashes == MAX_CRASHES:
            for _, key, *_ in items[start:]:
                verdicts[key] = f"not read: TVM crashed on {crashes} other lines of this database"
            break
    return verdicts


MAX_CRASHES = 16


def _run_child(items: list, start: int, verdicts: dict) -> int | None:
    """Read items[start:] in a child; None when it got through, else the item it failed on."""
    import select
    import signal
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            _child(items, start, verdicts, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    position, buffer, ready, timed_out = start, b"", False, False
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            if not select.select([pipe], [], [], TVM_SECONDS_PER_LINE)[0]:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
                break
            chunk = pipe.read(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                message, buffer = buffer.split(b"\n", 1)
                if not ready:
                    ready = True  # the child's first line: it is set up
                    continue
                verdicts[items[position][1]] = message.decode("utf-8", "replace") or None
                position += 1
    _, status = os.waitpid(pid, 0)
    if position >= len(items):
        return None
    if ready and timed_out:
        verdicts[items[position][1]] = f"TVM did not finish reading it in {TVM_SECONDS_PER_LINE} s"
    elif ready and os.WIFSIGNALED(status):
        verdicts[items[position][1]] = f"TVM crashes reading it (signal {os.WTERMSIG(status)})"
    else:  # failed before reading a line, or left without a crash: resdsl's fault, not the line's
        raise RuntimeError(f"the process checking tuning records with TVM stopped (status {status})")
    return position


def _child(items: list, start: int, verdicts: dict, out: int) -> None:  # pragma: no cover - runs in the child
    import resource

    import tvm_ffi
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)  # TVM's own messages and crash reports: the parent words the verdict
    try:  # an allocation the size a line claims fails here as an exception, not a swap storm
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (8 << 30), resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass
    parse = tvm_ffi.get_global_func("ffi.json.Parse")
    workload_from_json = tvm_ffi.get_global_func("s_tir.meta_schedule.WorkloadFromJSON")
    record_from_json = tvm_ffi.get_global_func("s_tir.meta_schedule.TuningRecordFromJSON")
    os.write(out, b"ready\n")
    workloads: dict[int, Any] = {}
    for position, (kind, key, raw, index) in enumerate(items):
        if position < start and verdicts.get(key):
            continue  # reported already; perhaps the line that crashed the last child
        problem = ""
        try:
            if kind == "W":
                workload = workload_from_json(parse(raw.decode("utf-8")))
                tvm_ffi.structural_hash(workload.mod)  # as JSONDatabase does on loading
                workloads[index] = workload
            elif index not in workloads:
                problem = f"its workload (line {index + 1} of {WORKLOAD_FILE}) is damaged"
            elif position >= start:
                record_from_json(parse(raw.decode("utf-8"))[1], workloads[index])
        except Exception as exc:  # noqa: BLE001 - whatever TVM raises is the line's problem
            problem = "TVM cannot read it: " + first_line(exc)
        if position >= start:
            os.write(out, problem.encode("utf-8", "replace") + b"\n")


def first_line(exc: Exception) -> str:
    """TVM's reason, which its messages put last, after the object they could not read."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1].removeprefix("The error is: ") if lines else ""
    if not text or text == "(not rendered)":  # a schedule error, rendered only on request
        text = f"{type(exc).__name__} (its trace does not apply to its workload)"
    return printable(text)[:200]

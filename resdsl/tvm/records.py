"""MetaSchedule's two JSON-lines files, checked line by line before TVM reads them.

TVM's `JSONDatabase` trusts its files: a line of the wrong shape (`{}`, `null`, a null run time,
a decision for an instruction that does not exist, a cycle in a workload's object graph) is
dereferenced in C++ and kills the process with SIGSEGV, and a workload whose length prefix lies
allocates whatever it says. A work directory or a shipped database may come from anywhere, so
every line is checked here first, in two steps:

1. Its shape, in Python: the formats below, as TVM 0.27 writes them (`Workload::AsJSON`,
   `TuningRecord::AsJSON`, `Trace::AsJSON`, `ffi::ToJSONGraph`), with types, ranges and
   nesting bounded. This catches what a crash, an edit or a hostile hand leaves, and says why.
2. TVM's own reading of each line that passed, in a forked child (`tvm_problems`): what TVM
   itself rejects, or crashes on, is found there rather than in this process. A line is read
   there once per process.

    database_workload.json       [shash, base64(uint64 length LE + JSON object graph of an IRModule)]
    database_tuning_record.json  [workload index, [trace, run_secs, target, args_info]]
        trace      [[[kind, inputs, attrs, outputs], ...], [[instruction index, decision], ...]]
        run_secs   null, or seconds: finite, non-negative
        target     null, or a target config: {"kind": "llvm", "mcpu": ..., ...}
        args_info  null, or [["TENSOR", dtype, shape], ...]

A record's workload index is the line of the workload file it refers to, counted from 0 over
every line, as TVM counts them. Each function here raises `Bad` with the problem in words.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..diagnostics import printable

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"

# TVM writes lines nested at most 8 deep and object graphs 4 deep; its JSON parser recurses
# without a bound, so a line nested far deeper crashes it.
MAX_DEPTH = 32
INT64 = 1 << 63
# The kernel of a record is applied in a child process; a line TVM takes this long over is not
# one it wrote (a record takes ~30 ms, a workload less).
TVM_SECONDS_PER_LINE = 120


class Bad(ValueError):
    """What is wrong with one line, in words for a message."""


# ---- JSON as TVM's parser reads it

def loads(raw: bytes) -> Any:
    """One line as strict JSON: UTF-8, no NaN or Infinity (TVM would read them as numbers),
    integers within int64, strings without lone surrogates, nested at most MAX_DEPTH deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Bad(f"it is not UTF-8 ({exc.reason})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise Bad(f"it is nested more than {MAX_DEPTH} deep") from None
    except json.JSONDecodeError as exc:
        raise Bad(f"it is not JSON ({exc.msg} at column {exc.colno})") from None
    _check_values(value)
    return value


def _no_constant(name: str) -> Any:
    raise Bad(f"it holds {name}, which is not a number JSON allows")


def _check_values(value: Any) -> None:
    """Depth, integer range and string encoding of a parsed value, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise Bad(f"it is nested more than {MAX_DEPTH} deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -INT64 <= item < INT64:
                raise Bad(f"the integer {item} is outside int64")
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise Bad("a string in it holds a lone surrogate") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_null(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None:
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# ---- database_workload.json

_SHASH = re.compile(r"[0-9]{1,20}")


def check_workload(value: Any) -> None:
    """A workload line: [structural hash, base64 of the IRModule's object graph]."""
    if not (isinstance(value, list) and len(value) == 2):
        raise Bad(f"a workload is a list [hash, module], not {_kind(value)}"
                  + (f" of {len(value)}" if isinstance(value, list) else ""))
    shash, encoded = value
    if not (isinstance(shash, str) and _SHASH.fullmatch(shash) and int(shash) < 1 << 64):
        raise Bad("its hash is not a 64-bit unsigned integer in decimal")
    if not isinstance(encoded, str):
        raise Bad(f"its module is {_kind(encoded)}, not a base64 string")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Bad("its module is not valid base64") from None
    # TVM's base64 stream holds a uint64 length, then that many bytes; it allocates the
    # length before reading, so a length that lies must not reach it.
    if len(blob) < 8:
        raise Bad("its module is too short to hold its length")
    (length,) = struct.unpack("<Q", blob[:8])
    if length != len(blob) - 8:
        raise Bad(f"its module says it is {length} bytes long, but {len(blob) - 8} follow")
    check_graph(loads(blob[8:]), "ir.IRModule", "its module")


def check_graph(graph: Any, root_type: str | None, what: str) -> None:
    """An object graph as `ffi::ToJSONGraph` writes it: {"root_index", "nodes", "metadata"},
    each node {"type", "data"}. Containers refer to nodes written before them; that much is
    checked here (a container that contains itself recurses forever in TVM), the fields of
    other objects by TVM, in the child."""
    if not isinstance(graph, dict):
        raise Bad(f"{what} is {_kind(graph)}, not an object graph")
    nodes, root = graph.get("nodes"), graph.get("root_index")
    if not (isinstance(nodes, list) and nodes):
        raise Bad(f"{what} has no list of nodes")
    if not (_is_int(root) and 0 <= root < len(nodes)):
        raise Bad(f"{what}'s root_index is not one of its {len(nodes)} nodes")
    if "metadata" in graph and not isinstance(graph["metadata"], dict):
        raise Bad(f"{what}'s metadata is not an object")
    for i, node in enumerate(nodes):
        if not (isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"]):
            raise Bad(f"{what}'s node {i} is not an object with a type")
        if node["type"] in _CONTAINERS:
            data = node.get("data")
            if not (isinstance(data, list) and all(_is_int(x) and 0 <= x < i for x in data)):
                raise Bad(f"{what}'s node {i} ({node['type']}) refers to nodes that are not before it")
    if root_type is not None and nodes[root]["type"] != root_type:
        raise Bad(f"{what} is a {printable(nodes[root]['type'][:60])}, not an {root_type}")


_CONTAINERS = frozenset({"ffi.Array", "ffi.List", "ffi.Map", "ffi.Dict"})


# ---- database_tuning_record.json

def check_record(value: Any, workloads: int) -> int:
    """A record line, `workloads` being the workload file's line count; its workload index."""
    if not (isinstance(value, list) and len(value) == 2):
        raise Bad(f"a record is a list [workload index, record], not {_kind(value)}"
                  + (f" of {len(value)}" if isinstance(value, list) else ""))
    index, record = value
    if not _is_int(index):
        raise Bad(f"its workload index is {_kind(index)}, not an integer")
    if index < 0:
        raise Bad(f"its workload index {index} is negative")
    if index >= workloads:
        raise Bad(f"its workload index {index} is past the {workloads} line(s) of {WORKLOAD_FILE}")
    if not (isinstance(record, list) and len(record) == 4):
        raise Bad("a record is [trace, run_secs, target, args_info], not "
                  + (f"a list of {len(record)}" if isinstance(record, list) else _kind(record)))
    trace, run_secs, target, args_info = record
    check_trace(trace)
    check_run_secs(run_secs)
    if target is not None:
        check_target(target)
    if args_info is not None:
        check_args_info(args_info)
    return index


def check_trace(trace: Any) -> None:
    """[[instruction, ...], [[instruction index, decision], ...]]."""
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(p, list) for p in trace)):
        raise Bad("its trace is not [instructions, decisions]")
    insts, decisions = trace
    for i, inst in enumerate(insts):
        if not (isinstance(inst, list) and len(inst) == 4):
            raise Bad(f"instruction {i} of its trace is not [kind, inputs, attrs, outputs]")
        kind, inputs, attrs, outputs = inst
        if not (isinstance(kind, str) and kind):
            raise Bad(f"instruction {i} of its trace has no kind")
        if not (isinstance(inputs, list) and isinstance(attrs, list) and isinstance(outputs, list)):
            raise Bad(f"instruction {i} of its trace is not [kind, inputs, attrs, outputs]")
        # TVM writes a missing input as the string "None", never as null: a null is read as an
        # object and dereferenced.
        name = f"instruction {i} ({printable(kind[:40])}) of its trace"
        if _has_null(inputs):
            raise Bad(f"{name} has a null input")
        for text in _strings(inputs):
            if not text:
                raise Bad(f"{name} has an empty input")
            if text[0] == "{" and text[-1] == "}":  # TVM reads it as an object graph (an IndexMap)
                check_graph(loads(text.encode("utf-8")), None, f"an input of {name}")
        if not all(isinstance(o, str) for o in outputs):
            raise Bad(f"{name} has an output that is not a name")
    for decision in decisions:
        # TVM stores a decision at its index without a bounds check.
        if not (isinstance(decision, list) and len(decision) == 2 and _is_int(decision[0])):
            raise Bad("a decision of its trace is not [instruction index, decision]")
        if not 0 <= decision[0] < len(insts):
            raise Bad(f"a decision of its trace is for instruction {decision[0]}, "
                      f"but the trace has {len(insts)}")
        if _has_null(decision[1]):
            raise Bad(f"the decision for instruction {decision[0]} of its trace is null")


def _strings(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)


def check_run_secs(run_secs: Any) -> None:
    """null (never measured), or the measured seconds: finite and non-negative."""
    if run_secs is None:
        return
    if not isinstance(run_secs, list):
        raise Bad(f"its run time is {_kind(run_secs)}, not a list of seconds")
    for secs in run_secs:
        if not (_is_number(secs) and secs >= 0):
            raise Bad(f"its run time {printable(json.dumps(secs)[:40])} is not a finite, non-negative "
                      "number of seconds")


def check_target(target: Any, depth: int = 0) -> None:
    """A target config as `Target::ToConfig` writes it: a kind and options of plain values."""
    if not isinstance(target, dict):
        raise Bad(f"its target is {_kind(target)}, not an object")
    if not isinstance(target.get("kind"), str) or not target["kind"]:
        raise Bad("its target has no kind")
    for key, value in target.items():
        if key == "host" and isinstance(value, dict) and depth == 0:
            check_target(value, depth + 1)
        elif isinstance(value, list):
            if not all(_is_plain(v) for v in value):
                raise Bad(f"its target's {printable(key[:40])} holds more than strings and numbers")
        elif not _is_plain(value):
            raise Bad(f"its target's {printable(key[:40])} is {_kind(value)}, not a string or number")


def _is_plain(value: Any) -> bool:
    return isinstance(value, (str, bool)) or _is_number(value)


def check_args_info(args_info: Any) -> None:
    """[["TENSOR", dtype, shape], ...]: the kernel's arguments."""
    if not isinstance(args_info, list):
        raise Bad(f"its arguments are {_kind(args_info)}, not a list")
    for i, arg in enumerate(args_info):
        if not (isinstance(arg, list) and len(arg) == 3 and arg[0] == "TENSOR"
                and isinstance(arg[1], str) and arg[1]
                and isinstance(arg[2], list) and all(_is_int(d) for d in arg[2])):
            raise Bad(f"its argument {i} is not [\"TENSOR\", dtype, shape]")


def run_secs(value: Any) -> list[float] | None:
    """A record line's measured seconds, or None where the line is not a record that has them:
    for progress displays, which read the file while MetaSchedule appends to it."""
    try:
        check_run_secs(value[1][1])
        secs = value[1][1]
    except (Bad, TypeError, IndexError, KeyError):
        return None
    return [float(s) for s in secs] if secs else None


# ---- both files

@dataclass
class Line:
    number: int  # in its file, from 1
    raw: bytes
    value: Any = None
    problem: str | None = None


@dataclass
class Scan:
    """Every line of the two files, with what is wrong with each."""
    workloads: list[Line]
    records: list[Line]
    workload_lines: int  # as TVM counts them: a record's index is one of these
    torn: list[tuple[str, int]] = field(default_factory=list)  # (file, line) cut short by a kill
    blank: list[tuple[str, int]] = field(default_factory=list)  # (file, line): nothing to set aside

    @property
    def damaged(self) -> list[tuple[str, Line]]:
        return [(name, line) for name, lines in (("workloads", self.workloads), ("records", self.records))
                for line in lines if line.problem is not None]

    def renumbered(self) -> tuple[list[bytes], list[bytes]]:
        """The lines that survive, records pointing at their workload's new line."""
        kept = [line for line in self.workloads if line.problem is None]
        new = {line.number - 1: i for i, line in enumerate(kept)}
        records = []
        for line in self.records:
            if line.problem is not None:
                continue
            old = line.value[0]
            # Only the index changes; the rest of the line stays as it was written.
            records.append(line.raw if new[old] == old else
                           json.dumps([new[old], line.value[1]], separators=(",", ":")).encode())
        return [line.raw for line in kept], records


_SPACE = b" \t\r"  # JSON's whitespace within a line; bytes.strip() would also take \f and \v


def split(data: bytes) -> tuple[list[tuple[int, bytes]], list[int], int]:
    """(line number, line without surrounding whitespace) for each line with something on it,
    the numbers of blank lines (TVM cannot read one), and the number of a last line without a
    newline after it (perhaps cut short), 0 if there is none."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another
    stripped = [(n, line.strip(_SPACE)) for n, line in enumerate(lines, 1)]
    last = len(lines) if lines and not data.endswith(b"\n") else 0
    return [(n, line) for n, line in stripped if line], [n for n, line in stripped if not line], last


def scan(workload_data: bytes, record_data: bytes) -> Scan:
    """Check every line of the two files' contents (step 1 and, for what passes, step 2)."""
    workload_lines, blank, last = split(workload_data)
    count = len(workload_lines) + len(blank)  # TVM counts every line
    result = Scan([], [], count, blank=[(WORKLOAD_FILE, n) for n in blank])
    for number, raw in workload_lines:
        line = _checked(WORKLOAD_FILE, number, raw, last, result, check_workload)
        if line is not None:
            result.workloads.append(line)
    good = {line.number - 1: line for line in result.workloads if line.problem is None}
    aside = {line.number - 1 for line in result.workloads if line.problem is not None}
    record_lines, blank, last = split(record_data)
    result.blank += [(RECORD_FILE, n) for n in blank]
    for number, raw in record_lines:
        line = _checked(RECORD_FILE, number, raw, last, result, lambda v: check_record(v, count))
        if line is None:
            continue
        if line.problem is None:
            index = line.value[0]
            if index in aside:
                line.problem = f"its workload (line {index + 1} of {WORKLOAD_FILE}) is damaged"
            elif index not in good:
                line.problem = (f"its workload index {index} refers to a line of {WORKLOAD_FILE} "
                                f"{'that was cut short' if index == count - 1 else 'that is blank'}")
        result.records.append(line)
    _tvm_check(result, good)
    return result


def _checked(name: str, number: int, raw: bytes, last: int, result: Scan, check) -> Line | None:
    """The line with its problem, or None for a last line cut short (noted in `torn`)."""
    try:
        value = loads(raw)
    except Bad as exc:
        if number == last and exc.args[0].startswith("it is not JSON"):
            result.torn.append((name, number))
            return None
        return Line(number, raw, None, str(exc))
    line = Line(number, raw, value)
    try:
        check(value)
    except Bad as exc:
        line.problem = str(exc)
    return line


# ---- step 2: TVM's reading, in a child process

# Verdicts of TVM's reading by digest of the line (a record's with its workload's):
# None where TVM read it, else the problem.
_VERDICTS: dict[bytes, str | None] = {}


def _read_cache() -> "Path | None":
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


def _tvm_check(result: Scan, good: dict[int, Line]) -> None:
    """Have TVM read each line that passed step 1 and is not known yet; mark what it refuses."""
    keys = {i: _digest(b"W", line.raw) for i, line in good.items()}
    if not _VERDICTS:
        _load_cached_verdicts()
    todo_records = []
    for line in result.records:
        if line.problem is None:
            key = _digest(b"R", keys[line.value[0]], line.raw)
            if key not in _VERDICTS:
                todo_records.append((key, line))
    needed = {line.value[0] for _, line in todo_records} | {i for i, k in keys.items() if k not in _VERDICTS}
    if needed:
        workloads = [(keys[i], good[i].raw, i) for i in sorted(needed)]
        records = [(key, line.raw, line.value[0]) for key, line in todo_records]
        found = tvm_problems(workloads, records)
        _VERDICTS.update(found)
        _save_verdicts(found)
    for i, line in good.items():
        line.problem = _VERDICTS.get(keys[i])
    for line in result.records:
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

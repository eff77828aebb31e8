"""Step 1 of checking MetaSchedule's two JSON-lines files: each line's shape, in Python.

The formats, as TVM 0.27 writes them (`Workload::AsJSON`, `TuningRecord::AsJSON`, `Trace::AsJSON`,
`ffi::ToJSONGraph`), with types, ranges and nesting bounded. This catches what a crash, an edit or
a hostile hand leaves, and says why (`records` says why a line is checked at all).

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
import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..diagnostics import printable

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"

# TVM writes lines nested at most 8 deep and object graphs 4 deep; its JSON parser recurses
# without a bound, so a line nested far deeper crashes it.
MAX_DEPTH = 32
INT64 = 1 << 63


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


@dataclass
class Line:
    """One line of either file: its value where it parses, and what is wrong with it."""
    number: int  # in its file, from 1
    raw: bytes
    value: Any = None
    problem: str | None = None

"""MetaSchedule's two JSON-lines files, checked line by line before TVM reads them.

TVM's `JSONDatabase` trusts its files: a line of the wrong shape (`{}`, `null`, a null run time,
a decision for an instruction that does not exist, a cycle in a workload's object graph) is
dereferenced in C++ and kills the process with SIGSEGV, and a workload whose length prefix lies
allocates whatever it says. A work directory or a shipped database may come from anywhere, so
every line is checked here first, in two steps:

1. Its shape, in Python (`record_lines`, which spells out the formats): what a crash, an edit
   or a hostile hand leaves, and why.
2. TVM's own reading of each line that passed, in a forked child (`record_reading`): what TVM
   itself rejects, or crashes on, is found there rather than in this process. A line is read
   there once per process.

`scan` runs both over the two files' contents and says what is wrong with each line. The names
a work directory reads lines with (`loads`, `Bad`, `run_secs`, `check_target`, `first_line`)
are here too, so `workdir` reads the files through one module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .record_lines import (
    RECORD_FILE,
    WORKLOAD_FILE,
    Bad,
    Line,
    check_record,
    check_target,
    check_workload,
    loads,
    run_secs,
)
from .record_reading import first_line, tvm_check

__all__ = ["RECORD_FILE", "WORKLOAD_FILE", "Bad", "Line", "Scan", "check_target", "first_line", "loads",
           "run_secs", "scan", "split"]


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
    tvm_check(result.records, good)
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

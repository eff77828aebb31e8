"""A tuning work directory: MetaSchedule's records and what resdsl keeps beside them.

This class is the one owner of the on-disk format, with `records`, which checks MetaSchedule's
two files line by line; no other module spells a file name of it.

    database_workload.json        MetaSchedule: one kernel (workload) a line
    database_tuning_record.json   MetaSchedule: one measured candidate a line, appended as measured
    lowering.json                 how the graph was lowered: records apply only to kernels lowered alike
    measurement.json              how candidates are timed: {"cache": "cold"} or {"cache": "hot"}
    selected/                     a work directory of its own: each kernel's best records re-timed
                                  cold, and choices.json, what the selection chose
    report.json                   the last tuning run's `TuneReport`
    *.corrupt                     lines `repair` set aside: never deleted, always reported

A shipped database (`resdsl.tvm.databases`) has the same layout with the two MetaSchedule files
gzipped (`*.json.gz`) and only each kernel's chosen record in them.

Nothing here trusts these files: each is read through `resdsl.files` (a regular file, capped at
RESDSL_MAX_RECORD_BYTES; a gzipped one decompressed to the same cap, by `workdir_io`), resdsl's
own JSON files are checked for shape, and MetaSchedule's are checked line by line (`records`)
before TVM opens them. `repair` sets a damaged line of a work directory aside; anything else that
reads the database (`database`, `check`) refuses it, naming the file and line. A shipped database
is never rewritten: a damaged line in it is refused, since its records were chosen together and
building from part of them would quietly differ from what was shipped.
"""
from __future__ import annotations

import atexit
import gzip
import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .. import files
from ..diagnostics import ResdslError, printable
from ..output import write_atomic
from . import records as schema
from .lowering import Lowering
from .workdir_io import SHIPPED_HINT, append_aside, cache_setting, choices_summary, gunzip, present, read

if TYPE_CHECKING:
    from .report import TuneReport

WORKLOADS = schema.WORKLOAD_FILE
RECORDS = schema.RECORD_FILE
LOWERING = "lowering.json"
MEASUREMENT = "measurement.json"
SELECTED = "selected"
CHOICES = "choices.json"
REPORT = "report.json"
CORRUPT = ".corrupt"
GZ = ".gz"


@dataclass(frozen=True)
class Repair:
    """What `WorkDir.repair` did: records that survive, a torn last line dropped, lines set aside
    (`problems`: `FILE:LINE: what was wrong`, one per line set aside)."""
    records: int
    torn: int = 0
    set_aside: int = 0
    aside_path: Path | None = None
    problems: tuple[str, ...] = ()


_DAMAGED_HINT = ("resdsl sets damaged lines of a work directory aside when it tunes or builds from it; "
                 "move this one out of the file, or tune into a new directory")


class WorkDir:
    """One `resdsl tune` work directory (or a shipped database, or a selection inside one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._unpacked: Path | None = None

    def __repr__(self) -> str:
        return f"WorkDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ---- the MetaSchedule database
    @property
    def shipped(self) -> bool:
        """Gzipped and read-only: a database that ships with resdsl."""
        return (self.path / (RECORDS + GZ)).exists()

    def _data(self, name: str) -> bytes | None:
        """WORKLOADS' or RECORDS' contents (a shipped database's decompressed), None where the
        file is absent. A FIFO, a device, a directory or a file past the cap is refused."""
        if self.shipped:
            return gunzip(self.path / (name + GZ))
        path = self.path / name
        if not (path.exists() or path.is_symlink()):  # a dangling link is refused, not created through
            return None
        return files.read_bytes(path, "max_record_bytes", what="tuning database file",
                                directory_hint=f"MetaSchedule keeps {name} in a file; move this away")

    def _shown(self, name: str) -> Path:
        return self.path / (name + GZ if self.shipped else name)

    def check(self) -> tuple[bytes, bytes]:
        """The two files' contents, once every line of them is known good; else a user error
        naming the first damaged line. A torn last line counts: only `repair` drops one.
        Contents checked clean once are not checked again in this process."""
        workloads, records = self._data(WORKLOADS) or b"", self._data(RECORDS) or b""
        key = _digest(workloads, records)
        if key in _CLEAN:
            return workloads, records
        found = schema.scan(workloads, records)
        damaged = [(WORKLOADS if kind == "workloads" else RECORDS, line.number, line.problem)
                   for kind, line in found.damaged]
        damaged += [(name, number, "the line is blank, which MetaSchedule cannot read")
                    for name, number in found.blank]
        damaged += [(name, number, "the last line was cut short (by a killed run?)")
                    for name, number in found.torn]
        if damaged:
            name, number, problem = min(damaged, key=lambda d: (d[0] != WORKLOADS, d[1]))
            more = f" (and {len(damaged) - 1} more damaged line(s))" if len(damaged) > 1 else ""
            raise files.DamagedFile(self._shown(name), problem + more, number,
                                    hint=SHIPPED_HINT if self.shipped else _DAMAGED_HINT)
        _CLEAN.add(key)
        return workloads, records

    def _open_files(self) -> tuple[Path, Path]:
        """(workloads, records) as plain files MetaSchedule can open, once `check` passed; a
        shipped database is unpacked, from the very bytes checked, once per instance."""
        workloads, records = self.check()
        if not self.shipped:
            return self.path / WORKLOADS, self.path / RECORDS
        if self._unpacked is None:
            out = Path(tempfile.mkdtemp(prefix=f"resdsl-{self.name}-"))
            atexit.register(shutil.rmtree, out, True)
            (out / WORKLOADS).write_bytes(workloads)
            (out / RECORDS).write_bytes(records)
            self._unpacked = out
        return self._unpacked / WORKLOADS, self._unpacked / RECORDS

    def has_records(self) -> bool:
        """Whether it holds measured records (MetaSchedule creates the file empty). Anything in
        place of the file but an empty regular file counts, so that reading it refuses it."""
        if self.shipped:
            return True
        path = self.path / RECORDS
        if not (path.exists() or path.is_symlink()):
            return False
        return not (files.is_regular(path) and path.stat().st_size == 0)

    def database(self, allow_missing: bool = True):
        """MetaSchedule's JSONDatabase over this directory's records, once every line is checked.
        (TVM reads the files again: another process writing them meanwhile is not guarded against,
        as it is not for tuning into one directory twice at once.)"""
        from . import bf16
        bf16.register()  # TVM applies each record's trace on opening, and a bf16 one names it
        workloads, records = self._open_files()
        from tvm.s_tir import meta_schedule as ms
        try:
            return ms.database.JSONDatabase(str(workloads), str(records), allow_missing=allow_missing)
        except Exception as exc:  # noqa: BLE001 - changed since checked, or cannot be created
            raise ResdslError(f"MetaSchedule cannot open the database in {printable(str(self.path))}: "
                              f"{schema.first_line(exc)}", hint=_DAMAGED_HINT) from None

    def build_database(self):
        """The records a build applies: the selection where `tune` made one, else the search's."""
        source = self.selected if self.selected.has_records() else self
        return source.database()

    def record_lines(self) -> Iterator[bytes]:
        """The raw record lines, unchecked, for cheap reads while a search appends to them:
        callers take what parses and skip the rest."""
        data = self._data(RECORDS)
        if data:
            yield from (line for line in data.split(b"\n") if line.strip())

    def count_records(self) -> int:
        return sum(1 for _ in self.record_lines())

    def best_estimate_ms(self) -> float | None:
        """Sum over kernels of their best latency so far, read from the records file (an
        estimate for a progress display: task weights not applied)."""
        best: dict[int, float] = {}
        for line in self.record_lines():
            try:
                value = schema.loads(line)
            except schema.Bad:
                continue
            secs = schema.run_secs(value)
            if secs and secs[0] < 1e9 and type(value[0]) is int:
                best[value[0]] = min(best.get(value[0], math.inf), sum(secs) / len(secs))
        return sum(best.values()) * 1e3 if best else None

    def tuned_for(self):
        """The target its records were measured for (the first record's), or None."""
        from tvm.target import Target
        try:
            line = next(self.record_lines(), None)
            if line is None:
                return None
            target = schema.loads(line)[1][2]
            schema.check_target(target)
            return Target(target)
        except (ResdslError, schema.Bad, IndexError, TypeError, KeyError):
            return None  # not a readable database: building from it says what is wrong
        except Exception:  # noqa: BLE001 - TVM's refusal of a target: the same
            return None

    def repair(self) -> Repair:
        """Make both MetaSchedule files readable again after a crash or damage.

        A kill mid-write leaves at most the last line torn: that line is dropped. Any other line
        that is not what MetaSchedule writes (`records`), or that TVM cannot read, is moved to
        `NAME.corrupt` beside the file (appended, never overwritten) and reported, with the
        records of a workload set aside: TVM would otherwise refuse the whole file, or crash.
        Records point at their workload's line, so when workload lines go, the records after
        them are rewritten to point at the same workloads' new lines; the set-aside lines keep
        the numbers they had. A shipped database is only checked: it is never rewritten.
        """
        if self.shipped:
            self.check()
            return Repair(self.count_records())
        workloads, records = self._data(WORKLOADS), self._data(RECORDS)
        if workloads is None and records is None:
            return Repair(0)
        found = schema.scan(workloads or b"", records or b"")
        kept = dict(zip((WORKLOADS, RECORDS), found.renumbered()))
        rewrite = {}
        for name, data in ((WORKLOADS, workloads), (RECORDS, records)):
            repaired = b"".join(line + b"\n" for line in kept[name])
            if data is not None and repaired != data:
                rewrite[name] = repaired
        bad = {name: [line for line in lines if line.problem is not None]
               for name, lines in ((WORKLOADS, found.workloads), (RECORDS, found.records))}
        for name in rewrite:  # refused before anything is written
            if (self.path / name).is_symlink():
                first = (bad[name] or [None])[0]
                raise files.DamagedFile(self.path / name, first.problem if first else "it needs repair",
                                        first.number if first else None,
                                        hint="resdsl does not rewrite a file through a symbolic link; "
                                             "repair the file it points to by hand")
        aside_path, problems = None, []
        for name, lines in bad.items():
            if lines:
                aside_path = self.path / (name + CORRUPT)
                # kept before anything goes
                append_aside(aside_path, b"".join(line.raw + b"\n" for line in lines))
                shown = printable(str(self.path / name))
                problems += [f"{shown}:{line.number}: {line.problem}" for line in lines]
        for name, data in rewrite.items():
            write_atomic(self.path / name, data)
        if not problems:
            _CLEAN.add(_digest(*(rewrite.get(name, data or b"") for name, data in ((WORKLOADS, workloads),
                                                                                  (RECORDS, records)))))
        return Repair(len(kept[RECORDS]), len(found.torn), len(problems), aside_path, tuple(problems))

    # ---- what resdsl keeps beside the records
    def lowering(self) -> Lowering | None:
        """How its kernels were lowered; a selection is lowered as its search was. Directories
        from before resdsl recorded it hold NCHW direct convs."""
        for path in (self.path / LOWERING, self.path.parent / LOWERING if self.name == SELECTED else None):
            if path is not None and present(path):
                return read(path, Lowering.from_dict)
        return Lowering() if self.has_records() else None

    def save_lowering(self, lowering: Lowering) -> None:
        write_atomic(self.path / LOWERING, lowering.to_json())

    def measurement(self, target_kind: str) -> str:
        """How its candidates are timed: "cold" or "hot".

        Cold (CPU): every argument but the activation is flushed from the caches before each
        single run, as in the network, where each conv reads its weights from memory while its
        input is the previous kernel's fresh output. Hot is MetaSchedule's default, a ~100 ms
        loop over cached data; schedules ranked hot ran slower in the network than their
        records said (benchmarks/RESULTS.md). GPUs, and CPU directories tuned before this
        setting existed, are hot. The two never mix in one database: times are compared.
        """
        path = self.path / MEASUREMENT
        if present(path):
            return read(path, cache_setting)
        if self.has_records():
            return "hot"
        return "cold" if target_kind == "llvm" else "hot"

    def save_measurement(self, cache: str) -> None:
        write_atomic(self.path / MEASUREMENT, json.dumps({"cache": cache}) + "\n")

    @property
    def selected(self) -> "WorkDir":
        return WorkDir(self.path / SELECTED)

    def choices(self) -> dict | None:
        """The last selection's summary (`top_k`, `choices`), if it is still in force."""
        path = self.selected.path / CHOICES
        return read(path, choices_summary) if present(path) else None

    def discard_selection(self) -> None:
        shutil.rmtree(self.selected.path, ignore_errors=True)

    def staging(self) -> "WorkDir":
        """An empty directory beside the selection, which `commit_selection` puts in its place."""
        staging = self.path / f"{SELECTED}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return WorkDir(staging)

    def commit_selection(self, staging: "WorkDir", summary: dict) -> None:
        write_atomic(staging.path / CHOICES, json.dumps(summary, indent=1) + "\n")
        staging.save_measurement("cold")
        self.discard_selection()
        # whole, or not at all: a kill leaves the search's records in use
        staging.path.rename(self.selected.path)

    def report(self) -> "TuneReport | None":
        """The last tuning run's report; None where there is none, a user error where it is damaged."""
        from .report import TuneReport
        path = self.path / REPORT
        return read(path, TuneReport.from_dict) if present(path) else None

    def save_report(self, report: "TuneReport") -> Path:
        write_atomic(self.path / REPORT, report.to_json())
        return self.path / REPORT

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    def library_path(self, network: str) -> Path:
        return self.path / f"{network}.so"

    # ---- shipping
    def ship(self, dest: str | Path) -> "WorkDir":
        """Write the part of this directory that builds use into `dest`: each kernel's best
        record of the selection (else of the search), its workload, the lowering, the
        measurement and the report, with the two MetaSchedule files gzipped."""
        source = self.selected if self.selected.has_records() else self
        found = schema.scan(*source.check())  # verdicts known from the check: cheap
        best: dict[int, tuple[float, list]] = {}
        for line in found.records:
            workload, record = line.value
            secs = [float(s) for s in record[1] or []]
            if secs and secs[0] < 1e9:
                mean = sum(secs) / len(secs)
                if workload not in best or mean < best[workload][0]:
                    best[workload] = (mean, record)
        workloads = {line.number - 1: line.raw for line in found.workloads}
        keep = sorted(best)
        records = [json.dumps([new, best[old][1]], separators=(",", ":")).encode() + b"\n"
                   for new, old in enumerate(keep)]
        dest = Path(dest)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name, lines in ((WORKLOADS, [workloads[i] + b"\n" for i in keep]), (RECORDS, records)):
            # mtime=0: the same records always give the same bytes
            with open(dest / (name + GZ), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(b"".join(lines))
        for name in (LOWERING, MEASUREMENT, REPORT):
            # The selection's measurement: its records are the ones shipped.
            origin = (
                source.path / name
                if name == MEASUREMENT and (source.path / name).exists()
                else self.path / name
            )
            if origin.exists():
                (dest / name).write_bytes(files.read_bytes(origin, "max_record_bytes", what="tuning file"))
        if self.lowering() is not None and not (dest / LOWERING).exists():
            WorkDir(dest).save_lowering(self.lowering())
        return WorkDir(dest)


# Digests of (workloads, records) contents checked clean in this process.
_CLEAN: set[bytes] = set()

def _digest(workloads: bytes, records: bytes) -> bytes:
    return hashlib.sha256(len(workloads).to_bytes(8, "little") + workloads + records).digest()

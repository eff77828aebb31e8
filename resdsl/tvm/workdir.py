"""A tuning work directory: MetaSchedule's records and what resdsl keeps beside them.

This class is the one owner of the on-disk format; no other module spells a file name of it.

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
"""
from __future__ import annotations

import atexit
import gzip
import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..diagnostics import ResdslError, printable
from ..output import write_atomic

if TYPE_CHECKING:
    from .lowering import Lowering
    from .report import TuneReport

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
LOWERING = "lowering.json"
MEASUREMENT = "measurement.json"
SELECTED = "selected"
CHOICES = "choices.json"
REPORT = "report.json"
CORRUPT = ".corrupt"
GZ = ".gz"


@dataclass(frozen=True)
class Repair:
    """What `WorkDir.repair` did: records that survive, a torn last line dropped, lines set aside."""
    records: int
    torn: int = 0
    set_aside: int = 0
    aside_path: Path | None = None


class WorkDir:
    """One `resdsl tune` work directory (or a shipped database, or a selection inside one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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

    @cached_property
    def _files(self) -> tuple[Path, Path]:
        """(workloads, records) as plain files MetaSchedule can open; a shipped database is
        unpacked once per process into a temporary directory."""
        if not self.shipped:
            return self.path / WORKLOADS, self.path / RECORDS
        out = Path(tempfile.mkdtemp(prefix=f"resdsl-{self.name}-"))
        atexit.register(shutil.rmtree, out, True)
        for name in (WORKLOADS, RECORDS):
            with gzip.open(self.path / (name + GZ), "rb") as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return out / WORKLOADS, out / RECORDS

    def has_records(self) -> bool:
        """Whether it holds measured records (MetaSchedule creates the file empty)."""
        if self.shipped:
            return True
        path = self.path / RECORDS
        return path.exists() and path.stat().st_size > 0

    def database(self, allow_missing: bool = True):
        """MetaSchedule's JSONDatabase over this directory's records."""
        from tvm.s_tir import meta_schedule as ms
        workloads, records = self._files
        return ms.database.JSONDatabase(str(workloads), str(records), allow_missing=allow_missing)

    def build_database(self):
        """The records a build applies: the selection where `tune` made one, else the search's."""
        source = self.selected if self.selected.has_records() else self
        return source.database()

    def record_lines(self) -> Iterator[bytes]:
        """The raw record lines, for cheap reads while a search appends to them."""
        path = self._files[1] if self.shipped else self.path / RECORDS
        try:
            with open(path, "rb") as f:
                yield from (line for line in f if line.strip())
        except FileNotFoundError:
            return

    def count_records(self) -> int:
        return sum(1 for _ in self.record_lines())

    def best_estimate_ms(self) -> float | None:
        """Sum over kernels of their best latency so far, read from the records file (an
        estimate for a progress display: task weights not applied)."""
        best: dict[int, float] = {}
        for line in self.record_lines():
            try:
                workload, record = json.loads(line)
                secs = [float(s) for s in record[1] or []]
            except (ValueError, TypeError, IndexError):
                continue
            if secs and secs[0] < 1e9:
                best[workload] = min(best.get(workload, float("inf")), sum(secs) / len(secs))
        return sum(best.values()) * 1e3 if best else None

    def tuned_for(self):
        """The target its records were measured for (the first record's), or None."""
        from tvm.target import Target
        try:
            line = next(self.record_lines(), b"")
            return Target(json.loads(line)[1][2]) if line.strip() else None
        # TVM raises ValueError for a bad target
        except (OSError, ValueError, IndexError, TypeError, AttributeError):
            return None  # not a readable database: building from it says what is wrong

    def repair(self) -> Repair:
        """Make both MetaSchedule files readable again after a crash or damage.

        A kill mid-write leaves at most the last line torn: that line is dropped. A line that
        does not parse anywhere else is not what a crash leaves, so it is moved, with everything
        unreadable, to `NAME.corrupt` beside the file (appended, never overwritten) and
        reported; MetaSchedule would otherwise refuse the whole file.
        """
        if self.shipped:
            return Repair(self.count_records())
        records = torn = aside = 0
        aside_path = None
        for name in (WORKLOADS, RECORDS):
            path = self.path / name
            if not path.exists():
                continue
            data = path.read_bytes()
            lines = data.split(b"\n")
            good, bad = [], []
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except ValueError:
                    if i == len(lines) - 1:  # no newline after it: a write cut short
                        torn += 1
                    else:
                        bad.append(line)
                    continue
                good.append(line)
            repaired = b"".join(line + b"\n" for line in good)
            if bad:
                aside_path = path.with_name(name + CORRUPT)
                with open(aside_path, "ab") as f:
                    f.write(b"".join(line + b"\n" for line in bad))
                aside += len(bad)
            if repaired != data:
                write_atomic(path, repaired)
            if name == RECORDS:
                records = len(good)
        return Repair(records, torn, aside, aside_path)

    # ---- what resdsl keeps beside the records
    def lowering(self) -> "Lowering | None":
        """How its kernels were lowered; a selection is lowered as its search was. Directories
        from before resdsl recorded it hold NCHW direct convs."""
        from .lowering import Lowering
        for path in (self.path / LOWERING, self.path.parent / LOWERING if self.name == SELECTED else None):
            if path is not None and path.exists():
                return _read(path, Lowering.from_json)
        return Lowering() if self.has_records() else None

    def save_lowering(self, lowering: "Lowering") -> None:
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
        if path.exists():
            return _read(path, lambda text: json.loads(text)["cache"])
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
        return _read(path, json.loads) if path.exists() else None

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
        from .report import TuneReport
        try:
            return TuneReport.from_json((self.path / REPORT).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
        best: dict[int, tuple[float, bytes]] = {}
        for line in source.record_lines():
            workload, record = json.loads(line)
            secs = [float(s) for s in record[1] or []]
            if secs and secs[0] < 1e9:
                mean = sum(secs) / len(secs)
                if workload not in best or mean < best[workload][0]:
                    best[workload] = (mean, line)
        with open(source._files[0], "rb") as f:
            workloads = [line for line in f if line.strip()]
        keep = sorted(best)
        renumber = {old: new for new, old in enumerate(keep)}
        records = []
        for old in keep:
            record = json.loads(best[old][1])[1]
            records.append(json.dumps([renumber[old], record], separators=(",", ":")).encode() + b"\n")
        dest = Path(dest)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name, lines in (
            (WORKLOADS, [workloads[i].rstrip(b"\n") + b"\n" for i in keep]),
            (RECORDS, records),
        ):
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
                shutil.copyfile(origin, dest / name)
        if self.lowering() is not None and not (dest / LOWERING).exists():
            WorkDir(dest).save_lowering(self.lowering())
        return WorkDir(dest)


def _read(path: Path, parse):
    """One of resdsl's own JSON files, parsed; damage (a half-written file, an edit) is a user
    error naming the file, not a traceback."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ResdslError(f"{printable(str(path))} is damaged and cannot be read ({type(exc).__name__})",
                          hint="restore it, or delete it and rerun `resdsl tune` on this directory") from None

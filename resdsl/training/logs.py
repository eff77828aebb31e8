"""The run's metrics in the forms other tools read, beside metrics.jsonl (which stays the record):

    metrics.csv               the same rows and columns, a header row first; rewritten atomically
                              each epoch, so a kill leaves the last whole version
    events.out.tfevents.*     TensorBoard scalars, one tag per numeric column, step = epoch

Each process start opens a fresh event file (tensorboardX names it by time and host; resdsl adds
the process id) and begins it with a SessionLog.START event at step 1, then every row the run
already has, then each new epoch as it ends, flushed at once. TensorBoard reads a run's files in
name order and treats a START after the first as a restart: it drops every point it has read at or
past that step (event_accumulator's "orphaned data" purge). So after a kill -9 and resume it shows
each epoch once, with the values of metrics.jsonl, even for an epoch trained twice (killed between
writing its metrics and its checkpoint).
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from ..output import write_atomic

CSV = "metrics.csv"


def columns(rows: list[dict]) -> list[str]:
    """Every column of the rows, in order of first appearance (an older run's rows may lack some)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(out: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / CSV, text.getvalue())


def _scalars(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and type(v) in (int, float)}  # bools and text are no scalars


class TensorBoard:
    """This process's event file. tensorboardX's SummaryWriter queues events for a thread that
    a kill -9 takes with it; its EventsWriter, used here, writes them when asked."""

    def __init__(self, out: Path, rows: list[dict]) -> None:
        import os

        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        self.writer = EventsWriter(str(out / "events"), filename_suffix=f".{os.getpid()}")
        self.writer.write_event(Event(wall_time=time.time(), step=1,
                                      session_log=SessionLog(status=SessionLog.START)))
        for row in rows:
            self.add(row)

    def add(self, row: dict) -> None:
        import time

        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in _scalars(row).items()]
        self.writer.write_event(Event(wall_time=time.time(), step=row["epoch"], summary=Summary(value=values)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

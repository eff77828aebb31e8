"""Tuning directories and databases resdsl did not write (#28): every damaged line is set aside
or refused by name before TVM reads it (TVM dereferences what it is given, and a line of the
wrong shape was a SIGSEGV), every file is read bounded and regular-only (a FIFO hung, /dev/zero
took gigabytes), and a gzipped database decompresses no further than the cap.

The valid lines are two small kernels of a shipped database; the commands run in a subprocess,
so that a crash shows as a signal and a hang as a timeout."""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT
from test_tuning import TINY  # four short kernels: tuning stays quick on 2 cores
from resdsl.diagnostics import ResdslError
from resdsl.limits import LIMITS
from resdsl.tvm.workdir import RECORDS, WORKLOADS, WorkDir

pytestmark = pytest.mark.tvm

SHIPPED = ROOT / "resdsl" / "tvm" / "databases" / "resnet18-llvm-znver3"


def _shipped_lines() -> tuple[list[bytes], list[bytes]]:
    """Two workload lines of a shipped database (its two smallest kernels) and their records,
    renumbered to point at them."""
    workloads = gzip.decompress((SHIPPED / (WORKLOADS + ".gz")).read_bytes()).splitlines()
    pick = sorted(range(len(workloads)), key=lambda i: len(workloads[i]))[:2]
    records = []
    for line in gzip.decompress((SHIPPED / (RECORDS + ".gz")).read_bytes()).splitlines():
        index, record = json.loads(line)
        if index in pick:
            records.append(json.dumps([pick.index(index), record], separators=(",", ":")).encode())
    return [workloads[i] for i in pick], sorted(records)


WORKLOAD_LINES, RECORD_LINES = _shipped_lines()
RECORD = json.loads(RECORD_LINES[0])[1]  # [trace, run_secs, target, args_info] of workload 0


def record(index=0, trace=None, run_secs=None, target=None, args=None) -> str:
    """A record line of workload `index`, one field replaced where given."""
    fields = [RECORD[0] if trace is None else trace, RECORD[1] if run_secs is None else run_secs,
              RECORD[2] if target is None else target, RECORD[3] if args is None else args]
    return json.dumps([index, fields])


def workload(module: bytes) -> str:
    """A workload line whose module is `module`, length prefix and all."""
    shash = json.loads(WORKLOAD_LINES[0])[0]
    return json.dumps([shash, base64.b64encode(struct.pack("<Q", len(module)) + module).decode()])


def write_dir(path: Path, workloads: list, records: list) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, lines in ((WORKLOADS, workloads), (RECORDS, records)):
        (path / name).write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return path


@pytest.fixture
def tiny(tmp_path) -> Path:
    spec = tmp_path / "tiny.rds"
    spec.write_text(TINY)
    return spec


def resdsl(*commands: list[str], env: dict | None = None, timeout: float = 300) -> list[tuple[int, str]]:
    """(exit code, stderr) of each command line, run side by side through the real CLI: a crash
    is a negative exit code, a hang a timeout, and neither may happen."""
    env = {**os.environ, "TVM_NUM_THREADS": "1", **(env or {})}
    procs = [subprocess.Popen([sys.executable, "-m", "resdsl", *args], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for args in commands]
    results = []
    try:
        for proc in procs:
            results.append((proc.wait(timeout), proc.stderr.read()))
    finally:
        for proc in procs:
            proc.kill()
            proc.stderr.close()
    for code, err in results:
        assert code in (0, 1), f"exit {code}:\n{err[-3000:]}"
        assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    return results


@contextmanager
def no_hang(seconds: int = 20):
    """A read that blocks (a FIFO opened for reading) fails the test instead of hanging it."""
    def expire(*_):
        raise TimeoutError("blocked reading a file")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- each damaged line, set aside by name

NESTED = "[" * 200 + "]" * 200
DAMAGED_RECORDS = {
    "object": "{}",
    "null": "null",
    "short list": "[1]",
    "string": '"x"',
    "number": "5",
    "index past the workloads": record(index=7),
    "negative index": record(index=-1),
    "index not an integer": record(index=0.0),
    "record of 3 fields": json.dumps([0, RECORD[:3]]),
    "NaN run time": record(run_secs=["NaN"]).replace('"NaN"', "NaN"),
    "infinite run time": record(run_secs=["inf"]).replace('"inf"', "1e999"),
    "negative run time": record(run_secs=[-1.0]),
    "null run time": record(run_secs=[None]),
    "target without kind": record(target={"mcpu": "znver3"}),
    "null in the target": record(target={**RECORD[2], "mcpu": None}),
    "decision past the trace": record(trace=[RECORD[0][0], [[len(RECORD[0][0]), 1]]]),
    "negative decision": record(trace=[RECORD[0][0], [[-1, 1]]]),
    "null input": record(trace=[[["GetLoops", [None], [], ["l0"]]], []]),
    "null shape": record(args=[["TENSOR", "float32", [None]]]),
    "nested too deep": record(trace=json.loads(NESTED)),
    "int past int64": record(run_secs=["BIG"]).replace('"BIG"', "9" * 30),
    "not UTF-8": b'[0, "\xff"]',
}


@pytest.mark.parametrize("line", DAMAGED_RECORDS.values(), ids=DAMAGED_RECORDS.keys())
def test_a_damaged_record_is_set_aside_by_name(tmp_path, line) -> None:
    work = WorkDir(write_dir(tmp_path / "work", WORKLOAD_LINES, [RECORD_LINES[0], line, RECORD_LINES[1]]))
    with pytest.raises(ResdslError, match=rf"{RECORDS}:2: ") as refused:  # reading it refuses it
        work.check()
    assert refused.value.diagnostic.hint
    repair = work.repair()
    assert (repair.records, repair.set_aside) == (2, 1), repair.problems
    assert repair.problems[0].startswith(f"{work.path / RECORDS}:2: ")
    raw = line if isinstance(line, bytes) else line.encode()
    assert (work.path / (RECORDS + ".corrupt")).read_bytes() == raw + b"\n"
    assert (work.path / RECORDS).read_bytes().splitlines() == RECORD_LINES
    work.check()  # what is left reads


def module_of(line: bytes) -> bytes:
    return base64.b64decode(json.loads(line)[1])[8:]


DAMAGED_WORKLOADS = {
    "not base64": json.dumps([json.loads(WORKLOAD_LINES[0])[0], "!!" + json.loads(WORKLOAD_LINES[0])[1]]),
    "base64 cut short": json.dumps([json.loads(WORKLOAD_LINES[0])[0], json.loads(WORKLOAD_LINES[0])[1][:-5]]),
    # TVM allocates the length it is told before reading: 7 GB once.
    "length prefix lies": json.dumps([json.loads(WORKLOAD_LINES[0])[0], base64.b64encode(
        struct.pack("<Q", 7 << 30) + module_of(WORKLOAD_LINES[0])).decode()]),
    "hash not a number": json.dumps(["x", json.loads(WORKLOAD_LINES[0])[1]]),
    "module not JSON": workload(b"hello"),
    "module not a graph": workload(b"[1, 2]"),
    "root outside the nodes": workload(json.dumps({"root_index": 5, "nodes": [{"type": "None"}]}).encode()),
    "array containing itself": workload(json.dumps(
        {"root_index": 1, "nodes": [{"type": "None"}, {"type": "ffi.Array", "data": [1]}]}).encode()),
    "module nested too deep": workload(NESTED.encode()),
    "object": "{}",
    "null": "null",
}


@pytest.mark.parametrize("line", DAMAGED_WORKLOADS.values(), ids=DAMAGED_WORKLOADS.keys())
def test_a_damaged_workload_is_set_aside_with_its_records(tmp_path, line) -> None:
    # The damaged workload is the first line: the other's records must follow it to its new line.
    work = WorkDir(write_dir(tmp_path / "work", [line, WORKLOAD_LINES[1]], RECORD_LINES))
    with pytest.raises(ResdslError, match=rf"{WORKLOADS}:1: "):
        work.check()
    repair = work.repair()
    assert (repair.records, repair.set_aside) == (1, 2), repair.problems
    assert "its workload (line 1 of database_workload.json) is damaged" in repair.problems[1]
    assert (work.path / WORKLOADS).read_bytes() == WORKLOAD_LINES[1] + b"\n"
    kept = json.loads((work.path / RECORDS).read_bytes())
    assert kept == [0, json.loads(RECORD_LINES[1])[1]]  # renumbered: its workload is now line 1
    assert (work.path / (RECORDS + ".corrupt")).read_bytes() == RECORD_LINES[0] + b"\n"
    assert len(work.database()) == 1  # and TVM reads what is left


def test_records_without_their_workloads_are_set_aside(tmp_path) -> None:
    work = WorkDir(write_dir(tmp_path / "work", [], RECORD_LINES))  # an empty workload file
    repair = work.repair()
    assert (repair.records, repair.set_aside) == (0, 2)
    assert "past the 0 line(s) of database_workload.json" in repair.problems[0]
    assert not work.has_records()


def test_a_line_that_crashes_tvm_is_found_in_a_child(tmp_path) -> None:
    # Well formed, but TVM's Annotate reads the null attribute as an object: SIGSEGV. Only a
    # child process dies of it.
    trace = [[*RECORD[0][0], ["Annotate", ["b0", [[[]]]], [None], []]], RECORD[0][1]]
    work = WorkDir(write_dir(tmp_path / "work", WORKLOAD_LINES, [*RECORD_LINES, record(trace=trace)]))
    repair = work.repair()
    assert (repair.records, repair.set_aside) == (2, 1)
    assert "TVM crashes reading it (signal" in repair.problems[0] and f"{RECORDS}:3:" in repair.problems[0]
    assert len(work.database()) == 2


def test_resdsls_own_failure_is_not_blamed_on_the_lines(tmp_path, monkeypatch) -> None:
    from resdsl.tvm import record_reading as records
    monkeypatch.setattr(records, "_VERDICTS", {})
    monkeypatch.setattr(records, "_child", lambda *args: None)  # the child leaves before reading a line
    work = WorkDir(write_dir(tmp_path / "work", WORKLOAD_LINES, RECORD_LINES))
    with pytest.raises(RuntimeError, match="checking tuning records with TVM stopped"):
        work.repair()
    assert (work.path / RECORDS).read_bytes().splitlines() == RECORD_LINES
    assert not list(work.path.glob("*.corrupt"))


def test_lines_tvm_read_are_remembered_in_the_users_cache(tmp_path, monkeypatch) -> None:
    from resdsl.tvm import record_reading as records
    from resdsl.tvm import workdir
    monkeypatch.setenv("RESDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(records, "_VERDICTS", {})
    monkeypatch.setattr(workdir, "_CLEAN", set())  # contents checked earlier in this process
    work = WorkDir(write_dir(tmp_path / "work", WORKLOAD_LINES, RECORD_LINES))
    work.check()
    (cache,) = (tmp_path / "cache").iterdir()
    with open(cache, "a") as f:
        f.write("not a digest\n")  # damage costs a re-check, nothing more
    monkeypatch.setattr(records, "_VERDICTS", {})
    monkeypatch.setattr(workdir, "_CLEAN", set())
    monkeypatch.setattr(records, "_child", lambda *args: None)  # a child now would fail the check
    WorkDir(work.path).check()  # ... so every line came from the cache
    bad = write_dir(tmp_path / "bad", WORKLOAD_LINES, [RECORD_LINES[0], DAMAGED_RECORDS["null"]])
    with pytest.raises(ResdslError, match=rf"{RECORDS}:2: "):
        WorkDir(bad).check()  # the cache holds clean lines only


def test_lines_set_aside_are_appended_never_overwritten(tmp_path) -> None:
    work = write_dir(tmp_path / "work", WORKLOAD_LINES, [RECORD_LINES[0], b"not json", RECORD_LINES[1]])
    assert WorkDir(work).repair().set_aside == 1
    (work / RECORDS).write_bytes((work / RECORDS).read_bytes() + b"{oops\n" + RECORD_LINES[1] + b"\n")
    assert WorkDir(work).repair().set_aside == 1
    assert (work / (RECORDS + ".corrupt")).read_bytes() == b"not json\n{oops\n"


def test_a_torn_last_line_is_dropped_and_blank_lines_go(tmp_path) -> None:
    work = write_dir(tmp_path / "work", WORKLOAD_LINES, [RECORD_LINES[0], b"", RECORD_LINES[1]])
    (work / RECORDS).write_bytes((work / RECORDS).read_bytes() + RECORD_LINES[0][:30])  # a kill mid-write
    with pytest.raises(ResdslError, match="is blank"):
        WorkDir(work).check()
    repair = WorkDir(work).repair()
    assert (repair.records, repair.torn, repair.set_aside) == (2, 1, 0)
    assert (work / RECORDS).read_bytes() == b"".join(line + b"\n" for line in RECORD_LINES)


# ---- files that are not regular files, and resdsl's own JSON files

READERS = {
    WORKLOADS: lambda w: w.repair(), RECORDS: lambda w: w.repair(),
    "lowering.json": lambda w: w.lowering(), "measurement.json": lambda w: w.measurement("llvm"),
    "report.json": lambda w: w.report(), "selected/choices.json": lambda w: w.choices(),
}


@pytest.mark.parametrize("kind", ["directory", "/dev/zero", "FIFO"])
@pytest.mark.parametrize("name", READERS)
def test_only_regular_files_are_read(tmp_path, name, kind) -> None:
    work = write_dir(tmp_path / "work", WORKLOAD_LINES, RECORD_LINES)
    path = work / name
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    if kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    refused = rf"{re.escape(str(path))} (is not a regular file|is a directory)"
    with no_hang(), pytest.raises(ResdslError, match=refused):
        READERS[name](WorkDir(work))


SHAPES = {
    "lowering.json": ["[]", '{"layout": 5}', '{"layout": "NHWC", "winograd": "yes"}', '{"tile": 8}'],
    "measurement.json": ["[]", '{"cache": "warm"}', "{}"],
    "report.json": ["[]", "{}", '{"network": "n", "target": "llvm", "batch": "1", "trials_budget": 1, '
                    '"lowering": {}, "measurement": "cold", "library": "x.so"}'],
    "selected/choices.json": ["[]", '{"top_k": "8", "choices": []}',
                              '{"top_k": 8, "choices": [{"name": 1}]}'],
}


@pytest.mark.parametrize("name, text", [(n, t) for n, texts in SHAPES.items() for t in texts])
def test_resdsls_own_files_are_checked_for_shape(tmp_path, name, text) -> None:
    work = write_dir(tmp_path / "work", WORKLOAD_LINES, RECORD_LINES)
    (work / name).parent.mkdir(exist_ok=True)
    (work / name).write_text(text)
    with pytest.raises(ResdslError, match=rf"{re.escape(str(work / name))}: ") as refused:
        READERS[name](WorkDir(work))
    assert refused.value.diagnostic.hint


def gzip_bomb(path: Path, mib: int = 300) -> None:
    """`mib` MiB of zeros, gzipped: about a thousandth of that on disk."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(compressor.compress(zeros))
        f.write(compressor.flush())


def shipped_copy(root: Path, name: str) -> Path:
    """A shipped database's layout under `root` (what RESDSL_DATABASES names)."""
    path = root / name
    path.mkdir(parents=True)
    for line_name, lines in ((WORKLOADS, WORKLOAD_LINES), (RECORDS, RECORD_LINES)):
        (path / (line_name + ".gz")).write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines)))
    return path


def test_a_gzip_bomb_is_decompressed_no_further_than_the_cap(tmp_path, monkeypatch) -> None:
    from resdsl.tvm import databases
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path))
    monkeypatch.setenv("RESDSL_MAX_RECORD_BYTES", str(1 << 20))
    monkeypatch.setattr(LIMITS, "max_record_bytes", 1 << 20)  # the bomb itself is a third of this
    path = shipped_copy(tmp_path, "tiny-llvm-znver3")
    databases.shipped("tiny-llvm-znver3").check()
    gzip_bomb(path / (RECORDS + ".gz"))
    with pytest.raises(ResdslError, match="decompresses to more than resdsl reads"):
        databases.shipped("tiny-llvm-znver3").check()
    # A shipped database is never rewritten: a damaged line is refused by file and line.
    (path / (RECORDS + ".gz")).write_bytes(gzip.compress(RECORD_LINES[0] + b"\n{}\n"))
    with pytest.raises(ResdslError, match=rf"{RECORDS}.gz:2: a record is a list"):
        databases.shipped("tiny-llvm-znver3").repair()


# ---- the commands

def test_compile_and_tune_set_damaged_lines_aside(tiny, tmp_path) -> None:
    damage = [*DAMAGED_RECORDS.values()][:8] + [record(index=2)]  # the last: the damaged workload's
    lines = [RECORD_LINES[0], *damage, RECORD_LINES[1]]
    workloads = [*WORKLOAD_LINES, DAMAGED_WORKLOADS["length prefix lies"]]
    works = [write_dir(tmp_path / command, workloads, lines) for command in ("compile", "tune")]
    results = resdsl(
        ["compile", str(tiny), "--target", "llvm", "--tuned", str(works[0]), "-o", str(tmp_path / "t.so")],
        ["tune", str(tiny), "--target", "llvm", "--work-dir", str(works[1]), "--trials", "1",
         "--select-top", "0"])
    for work, (code, err) in zip(works, results):
        assert code == 0, err
        assert f"set aside {len(damage) + 1} unreadable line(s)" in err and f"{work / RECORDS}.corrupt" in err
        assert f"{work / WORKLOADS}:3: its module says it is {7 << 30} bytes long" in err  # and why
        assert (work / RECORDS).read_bytes().splitlines()[:2] == RECORD_LINES


def test_commands_refuse_what_is_not_a_file(tiny, tmp_path) -> None:
    commands = []
    for name, make in (("lowering.json", os.mkfifo), (RECORDS, lambda p: p.symlink_to("/dev/zero")),
                       (WORKLOADS, Path.mkdir)):
        work = write_dir(tmp_path / name, WORKLOAD_LINES, RECORD_LINES)
        (work / name).unlink(missing_ok=True)
        make(work / name)
        commands.append(["compile", str(tiny), "--target", "llvm", "--tuned", str(work),
                         "-o", str(tmp_path / "t.so")])
    for name, (code, err) in zip(("lowering.json", RECORDS, WORKLOADS), resdsl(*commands, timeout=120)):
        assert code == 1 and f"{tmp_path / name / name}" in err, err


def test_bench_and_compile_refuse_a_damaged_shipped_database(tiny, tmp_path) -> None:
    from resdsl.tvm.target import make_target
    cpu = str(make_target("llvm").attrs["mcpu"])
    damaged = shipped_copy(tmp_path, f"tiny-llvm-{cpu}")
    (damaged / (RECORDS + ".gz")).write_bytes(gzip.compress(RECORD_LINES[0] + b"\n{}\n"))
    bomb = shipped_copy(tmp_path, f"bomb-tiny-llvm-{cpu}")  # a variant, which bench leaves out unread
    gzip_bomb(bomb / (RECORDS + ".gz"))
    # bench chooses the database tuned closest to this CPU and refuses it on reading; compile
    # reads the bomb no further than the cap.
    (bench, bench_err), (code, err) = resdsl(
        ["bench", str(tiny), "--engines", "tvm-tuned", "--budget", "0.05", "--rounds", "1"],
        ["compile", str(tiny), "--target", "llvm", "--tuned", bomb.name, "-o", str(tmp_path / "t.so")],
        env={"RESDSL_DATABASES": str(tmp_path), "RESDSL_MAX_RECORD_BYTES": str(1 << 20)})
    assert bench == 1 and f"{damaged / RECORDS}.gz:2: a record is a list" in bench_err, bench_err
    assert code == 1 and "decompresses to more than resdsl reads" in err, err

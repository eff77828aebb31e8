"""resdsl/files.py: the one way resdsl reads a file it did not write."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from resdsl.diagnostics import ResdslError
from resdsl.files import DamagedFile, json_lines, read_bytes, read_json
from resdsl.limits import LIMITS


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(LIMITS, "max_record_bytes", 100)


def refusal(path: Path, limit: str = "max_record_bytes") -> str:
    with pytest.raises(ResdslError) as info:
        read_bytes(path, limit, what="database file")
    return info.value.render()


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc\n" * 1000)
    assert read_bytes(tmp_path / "f", "max_record_bytes") == b"abc\n" * 1000


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would wait forever
    assert "fifo is not a regular file" in refusal(tmp_path / "fifo")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_link_to_a_device_is_refused(device: str, tmp_path: Path) -> None:
    (tmp_path / "records.json").symlink_to(device)
    assert "is not a regular file" in refusal(tmp_path / "records.json")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory, not a database file" in refusal(tmp_path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert "file not found" in refusal(tmp_path / "gone") and "gone" in refusal(tmp_path / "gone")


def test_a_file_past_the_cap_is_refused_before_reading(tmp_path: Path, small_cap) -> None:
    (tmp_path / "big").write_bytes(b"x" * 101)
    message = refusal(tmp_path / "big")
    assert "larger than resdsl reads (100 bytes)" in message and "RESDSL_MAX_RECORD_BYTES" in message
    (tmp_path / "ok").write_bytes(b"x" * 100)
    assert len(read_bytes(tmp_path / "ok", "max_record_bytes")) == 100


def test_json_lines_hand_back_damaged_lines_with_their_numbers(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_bytes(b'{"epoch": 1}\n\nnot json\n' + b"[" * 100_000 + b'\n{"epoch": 2')
    lines = list(json_lines(tmp_path / "m.jsonl"))
    assert [n for n, _, _ in lines] == [1, 3, 4, 5]
    assert lines[0][2] == {"epoch": 1}
    assert isinstance(lines[1][2], ValueError) and isinstance(lines[2][2], ValueError)  # deep nesting too
    assert isinstance(lines[3][2], ValueError)  # a torn last line: the caller decides


def test_read_json_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": ')
    with pytest.raises(DamagedFile) as info:
        read_json(tmp_path / "config.json")
    assert "config.json: not valid JSON" in str(info.value)


def test_reading_allocates_the_file_not_the_cap(tmp_path: Path) -> None:
    # read(cap + 1) asked for a 4 GiB buffer to read a kilobyte: under a memory limit (ulimit -v,
    # a container) every weights file failed with MemoryError.
    import subprocess
    import sys
    (tmp_path / "small").write_bytes(b"x" * 1000)
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
              "from resdsl.files import read_bytes; "
              "print(len(read_bytes(sys.argv[1], 'max_weights_bytes')))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "small")], capture_output=True, text=True)
    assert out.stdout.strip() == "1000", out.stderr


def test_a_file_growing_while_read_is_still_bounded(tmp_path: Path, small_cap, monkeypatch) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 50)
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size seen before another process wrote more
        result = real_fstat(fd)
        path.write_bytes(b"x" * 500)
        return result
    monkeypatch.setattr(os, "fstat", stale_fstat)
    assert "larger than resdsl reads" in refusal(path)

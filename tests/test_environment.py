"""Environment variables are input too: a RESDSL_MAX_* that is not a whole number in range is one
error naming the variable (exit 1), never a traceback at import nor a silent fall-back to the
default; a good one takes effect."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resdsl.diagnostics import ResdslError
from resdsl.limits import BOUNDS, Limits, read_bound

ROOT = Path(__file__).resolve().parent.parent
BAD = ["abc", "", " ", "1e9", "-1", "0", "1.5", "0x10", "٣", "\x1b[2J"]


@pytest.fixture
def clean_env(monkeypatch):
    for bound in BOUNDS.values():
        monkeypatch.delenv(bound.variable, raising=False)
    return monkeypatch


def run(env: dict[str, str], spec: str = "specs/resnet18.rds") -> subprocess.CompletedProcess:
    """`python -m resdsl check`, in a process of its own: LIMITS reads each variable once."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESDSL_MAX_")}
    return subprocess.run([sys.executable, "-m", "resdsl", "check", spec], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", list(BOUNDS))
def test_every_bound_refuses_what_is_not_a_whole_number_in_range(clean_env, name) -> None:
    bound = BOUNDS[name]
    for value in BAD + [str(bound.maximum + 1), "9" * 40]:
        clean_env.setenv(bound.variable, value)
        with pytest.raises(ResdslError, match=bound.variable) as info:
            read_bound(bound)
        assert "\x1b" not in info.value.render(), repr(value)
        with pytest.raises(ResdslError, match=bound.variable):
            Limits().check_environment()  # what the command line runs before any work
    for value, expected in (("1", 1), (str(bound.maximum), bound.maximum), (" 20 ", 20), ("1_000", 1000)):
        clean_env.setenv(bound.variable, value)
        assert read_bound(bound) == expected


def test_a_number_too_long_to_convert_is_a_user_error(clean_env) -> None:
    # int() refuses more than 4300 digits with ValueError: that was an internal error (exit 2).
    bound = BOUNDS["max_blocks"]
    clean_env.setenv(bound.variable, "9" * 5000)
    with pytest.raises(ResdslError, match=bound.variable) as info:
        read_bound(bound)
    assert len(info.value.render()) < 1000  # the value is not echoed whole


@pytest.mark.parametrize("value", ["abc", "", "1e9", "-1", "0", str(1 << 80)])
def test_a_bad_value_is_one_error_naming_the_variable(value) -> None:
    # RESDSL_MAX_SPEC_BYTES was read at import: a bad value was a traceback before any command ran.
    result = run({"RESDSL_MAX_SPEC_BYTES": value})
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "RESDSL_MAX_SPEC_BYTES" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_every_variable_is_checked_before_any_work(tmp_path) -> None:
    # A bound the command never uses (weights, for `check`) is reported all the same, and the spec
    # is not read: it does not exist.
    result = run({"RESDSL_MAX_WEIGHTS_BYTES": "-1"}, str(tmp_path / "missing.rds"))
    assert result.returncode == 1 and "RESDSL_MAX_WEIGHTS_BYTES" in result.stderr
    assert "not found" not in result.stderr


def test_a_good_value_takes_effect_with_a_located_error() -> None:
    result = run({"RESDSL_MAX_BLOCKS": "20"}, "specs/resnet152.rds")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "specs/resnet152.rds:9:" in result.stderr and "resdsl allows 20" in result.stderr
    assert "raise RESDSL_MAX_BLOCKS" in result.stderr
    assert run({"RESDSL_MAX_BLOCKS": "20"}).returncode == 0  # resnet18's 8 blocks fit


@pytest.mark.parametrize("value", ["/nonexistent/databases", "/dev/null"])
def test_a_databases_variable_naming_no_directory_is_an_error(value, monkeypatch) -> None:
    from resdsl.tvm import databases
    monkeypatch.setenv("RESDSL_DATABASES", value)
    with pytest.raises(ResdslError, match="RESDSL_DATABASES=.* is not a directory"):
        databases.root()

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# specs/blocks holds includes shared by bundled specs: blocks, no network.
SPECS = sorted(p.relative_to(ROOT) for p in (ROOT / "specs").rglob("*.rds") if not {"bad", "blocks"} & set(p.parts))
# Specs for the tests alone (every op at least once, ...): not bundled, so not in the reference table.
TEST_SPECS = sorted(p.relative_to(ROOT) for p in (ROOT / "tests" / "specs").glob("*.rds"))
BAD_SPECS = sorted(p.relative_to(ROOT) for p in (ROOT / "specs" / "bad").glob("*.rds"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# No cache of tuning-record checks shared between tests (or with the user's): each test sees
# TVM read its lines (tests/test_untrusted_databases.py tests the cache on its own).
os.environ["RESDSL_CACHE_DIR"] = ""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true",
                     help="rewrite tests/golden and specs/bad/*.expected from the current output")


@pytest.fixture
def regen(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--regen-golden")


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Error messages name files relative to the working directory; goldens assume the repo root.
    monkeypatch.chdir(ROOT)


def check_golden(path: Path, actual: str, regen: bool) -> None:
    if regen or not path.exists():
        if not regen:
            pytest.fail(f"{path} is missing; run pytest --regen-golden to create it")
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path} differs; rerun with --regen-golden if intended"


def run_metrics(run: Path) -> list[dict]:
    """A training run's metrics.jsonl, one dict per epoch."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# What torchrun gives each of its processes; one-process runs get it too so that both compute alike.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


# CI must not fail on an example nobody has seen before: the default profile is derandomized.
# Fuzz harder locally with e.g. `pytest --hypothesis-profile=explore`.
from hypothesis import settings as _settings  # noqa: E402

_settings.register_profile("default", derandomize=True)
_settings.register_profile("explore", derandomize=False, max_examples=2000)
_settings.load_profile("default")


def run_bounded(argv: list[str], seconds: int) -> tuple[int, str]:
    """resdsl in this process, with a bound on its time; (exit code, stderr)."""
    import contextlib
    import io
    import signal

    from resdsl.cli import main

    def hang(signum, frame):
        raise AssertionError(f"resdsl {' '.join(argv)} took more than {seconds} s")
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def kill_at_first_checkpoint(command: list[str], out: Path, seconds: float = 120) -> None:
    """Start a `resdsl train` command and SIGKILL it as soon as its first checkpoint exists."""
    import signal
    import subprocess
    import time
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()

"""`torchrun -m resdsl train`: two processes on the loopback interface (gloo) against one process
with the same global batch, on scikit-learn's digits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ONE_THREAD, ROOT
from conftest import run_metrics as metrics

RESNET = str(ROOT / "tests/specs/digits_resnet.rds")  # BatchNorm and dropout
CONVNET = str(ROOT / "tests/specs/digits_convnet.rds")  # neither
ONE = [sys.executable, "-m", "resdsl"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "resdsl"]


def train(launcher: list[str], args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = ONE_THREAD
    result = subprocess.run(launcher + ["train", *args, "--out", str(out)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_without_batchnorm_two_processes_train_as_one_to_rounding(tmp_path: Path) -> None:
    import torch
    args = [CONVNET, "--data", "digits", "--epochs", "3", "--batch", "64", "--augment"]
    train(ONE, args, tmp_path / "one")
    train(TWO, args, tmp_path / "two")
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["iteration"] == b["iteration"] and a["lr"] == b["lr"]
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5)
        for key in ("train_error", "test_error"):  # a tie broken the other way moves one image at most
            assert abs(a[key] - b[key]) <= 1 / 360
    a, b = torch.load(tmp_path / "one" / "final.pt"), torch.load(tmp_path / "two" / "final.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def resnet_runs(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("ddp")
    args = [RESNET, "--data", "digits", "--epochs", "5", "--batch", "64"]
    train(ONE, args, root / "one")
    result = train(TWO, args, root / "two")
    return root / "one", root / "two", result.stderr


def test_with_batchnorm_two_processes_match_one_within_the_stated_tolerance(resnet_runs) -> None:
    # BatchNorm normalises each process's half batch by its own statistics and dropout draws
    # differ per process, so the runs part ways; the README states this tolerance (observed over
    # seeds 0-2: test error within 1.4 points, training loss within 5%).
    one, two, stderr = resnet_runs
    a, b = metrics(one)[-1], metrics(two)[-1]
    assert (a["processes"], b["processes"]) == (1, 2) and a["iteration"] == b["iteration"] == 5 * 23
    assert abs(a["test_error"] - b["test_error"]) <= 0.03
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.10)
    assert b["test_error"] < 0.1  # and it learned: chance is 0.9
    # One process speaks and writes for the run.
    assert stderr.count("wrote ") == 1 and stderr.count("epoch 5/5") == 1


def test_a_killed_distributed_run_resumes_as_if_uninterrupted(resnet_runs, tmp_path: Path) -> None:
    _, uninterrupted, _ = resnet_runs
    out = tmp_path / "killed"
    command = TWO + ["train", RESNET, "--data", "digits", "--epochs", "5", "--batch", "64", "--out", str(out)]
    env = ONE_THREAD
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both of its workers
    process.wait()
    assert (out / "checkpoint.pt").exists() and len(metrics(out)) < 5
    assert subprocess.run(command, capture_output=True, env=env, timeout=600).returncode == 0
    keys = ("train_loss", "train_error", "test_loss", "test_error", "lr", "iteration")
    assert [[r[k] for k in keys] for r in metrics(out)] == [[r[k] for k in keys] for r in metrics(uninterrupted)]


def test_a_batch_smaller_than_the_processes_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(TWO + ["train", RESNET, "--data", "digits", "--batch", "1", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "error: a batch of 1 images cannot be split over 2 processes" in result.stderr
    # torchrun prints its own traceback for a failed worker; none comes from resdsl's code.
    assert f'File "{ROOT / "resdsl"}' not in result.stderr
    assert not (tmp_path / "r").exists()

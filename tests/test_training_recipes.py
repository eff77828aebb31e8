"""`resdsl train` beyond the paper's recipe (issue #30 item 7): cosine and warmup, label smoothing,
AdamW, bf16 autocast, fine-tuning from a state_dict, CSV and TensorBoard logs, best.pt, extending a
finished run. Each test checks a fact from outside the loop: an independent formula, torch's own
optimizer on the same module, the files read back with a reader written here."""
from __future__ import annotations

import csv
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, kill_at_first_checkpoint
from conftest import run_metrics as metrics

from resdsl.cli import main

SPEC = str(ROOT / "tests/specs/digits_convnet.rds")  # no BatchNorm or dropout: one batch, one function
DIGITS = ["--data", "digits", "--batch", "128"]
PER_EPOCH = 12  # 1,437 training images in batches of 128
# One step on every training image; at its first step the cosine schedule gives the whole --lr (the
# step schedule's milestones of a one-iteration run are both at 0).
WHOLE = ["--data", "digits", "--batch", "1437", "--epochs", "1", "--schedule", "cosine"]


def train(out: Path, *argv: str) -> int:
    return main(["train", SPEC, *argv, "--out", str(out)])


def digits_batch():
    """Every training image of digits, normalised per channel as the paper's recipe does, and labels."""
    import torch

    from resdsl.training.sources import load_dataset
    data = load_dataset("digits")
    x = data.train_x
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-6)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(data.train_y).long()


def seeded_module(seed: int = 0, **overrides: str):
    import resdsl
    return resdsl.load(SPEC, overrides or None).to_torch(seed=seed)


def test_cosine_with_warmup_logs_the_rate_of_each_epochs_first_and_last_step(tmp_path: Path) -> None:
    assert train(tmp_path / "run", *DIGITS, "--epochs", "3", "--schedule", "cosine", "--warmup-epochs", "1") == 0
    total = 3 * PER_EPOCH

    def rate(i: int) -> float:  # timm: linear warmup, then cosine over the whole run to 0
        return 0.1 * (i + 1) / PER_EPOCH if i < PER_EPOCH else 0.05 * (1 + math.cos(math.pi * i / total))
    rows = metrics(tmp_path / "run")
    assert [r["lr_first"] for r in rows] == pytest.approx([rate(e * PER_EPOCH) for e in range(3)], rel=1e-12)
    assert [r["lr"] for r in rows] == pytest.approx([rate((e + 1) * PER_EPOCH - 1) for e in range(3)], rel=1e-12)
    assert rows[0]["lr_first"] == pytest.approx(0.1 / PER_EPOCH) and rows[0]["lr"] == pytest.approx(0.1)
    recipe = json.loads((tmp_path / "run/config.json").read_text())["recipe"]
    assert recipe["schedule"] == "cosine" and recipe["warmup_epochs"] == 1
    # Another schedule on resume is another run.
    assert train(tmp_path / "run", *DIGITS, "--epochs", "3") == 1


def test_label_smoothing_loss_equals_an_independent_computation(tmp_path: Path) -> None:
    import torch
    # Confident logits (the seeded head times 30, through --init), where smoothing weighs.
    module = seeded_module()
    with torch.no_grad():
        module.fc.weight.mul_(30)
    torch.save(module.state_dict(), tmp_path / "confident.pt")
    assert train(tmp_path / "run", *WHOLE, "--label-smoothing", "0.2", "--init", str(tmp_path / "confident.pt")) == 0
    x, y = digits_batch()
    with torch.no_grad():
        logits = module(x).double().numpy()
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    target = np.full(logp.shape, 0.2 / 10)
    target[np.arange(len(y)), y.numpy()] += 0.8
    expected = -(target * logp).sum(1).mean()
    assert metrics(tmp_path / "run")[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected + logp[np.arange(len(y)), y.numpy()].mean()) > 0.01  # smoothing does change it


def test_adamw_takes_timms_defaults_and_its_first_step_is_torchs(tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F
    assert train(tmp_path / "run", *WHOLE, "--optimizer", "adamw") == 0
    recipe = json.loads((tmp_path / "run/config.json").read_text())["recipe"]
    assert (recipe["optimizer"], recipe["lr"], recipe["weight_decay"], recipe["momentum"]) == ("adamw", 1e-3, 0.05, None)
    module = seeded_module()
    x, y = digits_batch()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.05)
    F.cross_entropy(module(x), y).backward()
    optimizer.step()
    trained, initial = torch.load(tmp_path / "run/final.pt", weights_only=True), seeded_module().state_dict()
    assert trained.keys() == module.state_dict().keys()
    for key, value in module.state_dict().items():
        # Adam's first step is about lr * sign(gradient): 1e-3 for each weight, except where the
        # gradient is near eps (1e-8) and the order of summing the batch moves it a little.
        assert (trained[key] - initial[key]).abs().max() > 9e-4, key
        torch.testing.assert_close(trained[key], value, rtol=0, atol=2e-5, msg=key)


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "adamw", "--momentum", "0.9"], "--momentum is SGD's; adamw has none"),
    (["--amp", "fp16"], "--amp fp16 needs --device cuda"),
    (["--warmup-epochs", "2", "--epochs", "2"], "--warmup-epochs 2 leaves none of the 2 epochs"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--schedule", "linear"], "--schedule"),
])
def test_bad_recipe_settings_are_clear_errors(argv, message, tmp_path: Path, capsys) -> None:
    assert train(tmp_path / "run", "--data", "digits", *argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_trains(tmp_path: Path, monkeypatch) -> None:
    import torch

    from resdsl.network import Network
    seen: set = set()
    build = Network.to_torch

    def watched(self, *args, **kwargs):
        module = build(self, *args, **kwargs)
        module.register_forward_hook(lambda m, inputs, output: seen.add(output.dtype))
        return module
    monkeypatch.setattr(Network, "to_torch", watched)
    resnet = str(ROOT / "tests/specs/digits_resnet.rds")  # BatchNorm too; learns digits in two epochs
    # One epoch (bf16 is slow on CPUs without AVX512-BF16), in small batches so that it learns.
    assert main(["train", resnet, "--data", "digits", "--batch", "32", "--epochs", "1", "--amp", "bf16",
                 "--out", str(tmp_path / "run")]) == 0
    assert seen == {torch.bfloat16}  # every forward, training and test, under autocast
    (row,) = metrics(tmp_path / "run")
    assert all(math.isfinite(row[k]) for k in ("train_loss", "test_loss", "lr"))
    assert row["train_loss"] < math.log(10) - 0.2 and row["test_error"] < 0.5  # chance: 2.30 and 0.9
    weights = torch.load(tmp_path / "run/final.pt", weights_only=True)
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}  # as autocast keeps them


@pytest.fixture
def init_file(tmp_path: Path) -> Path:
    """A state_dict of the same network trained for 7 classes (seed 5): all but the head fit."""
    import torch
    path = tmp_path / "seven.pt"
    torch.save(seeded_module(5, classes="7").state_dict(), path)
    return path


def test_init_loads_every_layer_but_a_head_for_other_classes(init_file: Path, tmp_path: Path, capsys) -> None:
    import hashlib

    import torch
    out = tmp_path / "run"
    # A rate of 1e-12 leaves the weights where --init put them (to 1e-9).
    assert train(out, *WHOLE, "--lr", "1e-12", "--init", str(init_file)) == 0
    err = capsys.readouterr().err
    assert f"note: --init {init_file}: `fc` classifies 7 classes there, 10 here; it is re-initialised" in err
    theirs, fresh = torch.load(init_file, weights_only=True), seeded_module().state_dict()
    trained = torch.load(out / "final.pt", weights_only=True)
    for key, value in trained.items():
        expected = fresh[key] if key.startswith("fc.") else theirs[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-9, msg=key)
    assert not torch.equal(theirs["conv1.weight"], fresh["conv1.weight"])
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert recipe["init"] == {"path": str(init_file), "sha256": hashlib.sha256(init_file.read_bytes()).hexdigest()}
    other = tmp_path / "other.pt"
    torch.save(seeded_module(6).state_dict(), other)
    assert train(out, *WHOLE, "--lr", "1e-12", "--init", str(other)) == 1
    assert "was trained with other recipe settings" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("missing", "the weights lack `conv2.weight`"),
    ("unexpected", "`extra.weight` is not a parameter or buffer of digits_convnet"),
    ("shape", "`conv1.weight` has shape 8x1x5x5, the network needs 8x1x3x3"),
    ("checkpoint", "`model` holds a dict, not a tensor: a checkpoint, not a state_dict"),
])
def test_init_refuses_any_other_mismatch_by_file_and_key(damage, message, tmp_path: Path, capsys) -> None:
    import torch
    state = seeded_module().state_dict()
    if damage == "missing":
        del state["conv2.weight"]
    elif damage == "unexpected":
        state["extra.weight"] = torch.zeros(1)
    elif damage == "shape":
        state["conv1.weight"] = torch.zeros(8, 1, 5, 5)
    else:
        state = {"model": state, "epoch": 1}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    assert train(tmp_path / "run", *WHOLE, "--init", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}: {message}" in err and "Traceback" not in err


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path: Path) -> list:
    """Every Event in a TFRecord file, each record's length and data checked by CRC-32C. A torn last
    record (a kill mid-write) ends the file, as TensorBoard's reader treats it."""
    from tensorboardX.proto.event_pb2 import Event
    data, events, at = path.read_bytes(), [], 0
    while at + 12 <= len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        if at + 16 + length > len(data):
            break
        (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert header_crc == masked(crc32c(header)) and body_crc == masked(crc32c(body))
        events.append(Event.FromString(body))
        at += 16 + length
    return events


def scalars(events: list) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for event in events:
        for value in event.summary.value:
            assert value.tag not in steps.setdefault(event.step, {}), f"step {event.step} twice"
            steps[event.step][value.tag] = value.simple_value
    return steps


def as_tensorboard_shows(files: list[Path]) -> dict[int, dict[str, float]]:
    """The points TensorBoard keeps of a run's event files, read in name order: a SessionLog.START
    after the first drops every point at or past its step (event_accumulator's orphan purge)."""
    points: dict[int, dict[str, float]] = {}
    starts = 0
    for path in files:
        for event in read_events(path):
            if event.HasField("session_log") and event.session_log.status == 1:
                starts += 1
                if starts > 1:
                    points = {step: p for step, p in points.items() if step < event.step}
            for value in event.summary.value:
                points.setdefault(event.step, {})[value.tag] = value.simple_value
    return points


def as_logged(row: dict) -> dict[str, float]:
    return {k: float(np.float32(v)) for k, v in row.items() if k != "epoch"}


def test_logs_and_best_survive_kill_9_and_resume(tmp_path: Path) -> None:
    import torch
    whole = tmp_path / "whole"
    assert train(whole, *DIGITS, "--epochs", "3") == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "resdsl", "train", SPEC, *DIGITS, "--epochs", "3", "--out", str(out)]
    kill_at_first_checkpoint(command, out)
    assert len(metrics(out)) < 3
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = metrics(out)
    keys = ("train_loss", "test_loss", "test_error", "lr", "lr_first")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in metrics(whole)]

    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(rows[0]) and len(table) == 3
    assert [{k: float(v) for k, v in r.items()} for r in table] == [{k: float(v) for k, v in r.items()} for r in rows]

    files = sorted(out.glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per process start
    latest = read_events(files[-1])  # the resumed process wrote every epoch once
    assert latest[0].file_version == "brain.Event:2" and latest[1].session_log.status == 1  # START
    assert scalars(latest) == {r["epoch"]: as_logged(r) for r in rows}
    assert as_tensorboard_shows(files) == {r["epoch"]: as_logged(r) for r in rows}

    best = min(rows, key=lambda r: r["test_error"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["best"] == {"epoch": best["epoch"], "test_error": best["test_error"]}
    resumed = torch.load(out / "best.pt", weights_only=True)
    for key, value in torch.load(whole / "best.pt", weights_only=True).items():
        assert torch.equal(value, resumed[key]), key
    assert best_error(out / "best.pt") == best["test_error"]


def best_error(weights: Path) -> float:
    """The test error of a state_dict on digits, computed here."""
    import torch

    from resdsl.training.sources import load_dataset
    data = load_dataset("digits")
    mean = data.train_x.mean(axis=(0, 2, 3), keepdims=True)
    std = data.train_x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    module = seeded_module()
    module.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        logits = module.eval()(torch.from_numpy(((data.test_x - mean) / std).astype(np.float32)))
    return float((logits.argmax(1).numpy() != data.test_y).sum()) / len(data.test_y)


def test_a_finished_run_extends_with_a_schedule_for_the_new_total(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train(out, *DIGITS, "--epochs", "2") == 0
    assert [r["lr"] for r in metrics(out)] == pytest.approx([0.1, 0.001])  # milestones at 50%, 75%
    assert train(out, *DIGITS, "--epochs", "4", "--lr", "0.2") == 1  # not only more epochs
    assert "other recipe settings" in capsys.readouterr().err
    assert train(out, *DIGITS, "--epochs", "4") == 0
    assert "epoch 2/4" not in capsys.readouterr().err  # carried on, not retrained
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # The step schedule recomputed for 4 epochs: divided at 2 and 3 epochs' iterations.
    total = 4 * PER_EPOCH
    rate = [0.1 * 0.1 ** sum(i >= m for m in (total // 2, total * 3 // 4)) for i in range(total)]
    assert [r["lr_first"] for r in rows[2:]] == pytest.approx([rate[2 * PER_EPOCH], rate[3 * PER_EPOCH]])
    assert [r["lr"] for r in rows[2:]] == pytest.approx([rate[3 * PER_EPOCH - 1], rate[-1]])
    assert [r["lr"] for r in rows[2:]] == pytest.approx([0.01, 0.001])
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["epochs"] == 4 and config["extended"] == [{"from": 2, "to": 4}]
    assert train(out, *DIGITS, "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert "is a run of 4 epochs; --epochs 3 would shorten it" in err and "Traceback" not in err


def test_a_run_from_before_the_new_settings_still_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train(out, *DIGITS, "--epochs", "1") == 0
    config = json.loads((out / "config.json").read_text())
    for key in ("optimizer", "schedule", "warmup_epochs", "label_smoothing", "amp", "init"):
        del config["recipe"][key]
    (out / "config.json").write_text(json.dumps(config))
    assert train(out, *DIGITS, "--epochs", "1") == 0
    assert train(out, *DIGITS, "--epochs", "1", "--optimizer", "adamw") == 1

"""`resdsl train` and `resdsl plot`: real training on real images (scikit-learn's digits), a run
directory that survives kill -9, the CIFAR loader on files in the exact python-batch format."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, kill_at_first_checkpoint
from conftest import run_metrics as metrics
from resdsl.cli import main

SPEC = str(ROOT / "tests/specs/digits_resnet.rds")
FAST = ["--data", "digits", "--epochs", "3", "--batch", "64"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", SPEC, *FAST, "--out", str(out)]) == 0
    return out


def test_training_learns_digits_and_records_everything(digits_run: Path) -> None:
    rows = metrics(digits_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "train_error", "test_loss", "test_error", "lr", "images_per_s", "wall_s",
            "iteration"} <= set(rows[0])
    assert rows[-1]["test_error"] < 0.3  # ten classes: chance is 0.9; five epochs reach ~5%
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # The paper's schedule: 0.1, divided by 10 at 50% and 75% of the iterations (23 a epoch here).
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.01, 0.001])
    config = json.loads((digits_run / "config.json").read_text())
    assert config["spec"] == Path(SPEC).read_text() and config["recipe"]["seed"] == 0
    assert config["recipe"]["momentum"] == 0.9 and config["recipe"]["weight_decay"] == 1e-4


def test_final_weights_compile_for_every_target(digits_run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch
    import resdsl
    out = tmp_path / "digits.onnx"
    assert main(["compile", SPEC, "--target", "onnx", "--weights", str(digits_run / "final.pt"), "-o", str(out)]) == 0
    model = resdsl.load(SPEC).to_torch()
    model.load_state_dict(torch.load(digits_run / "final.pt"), strict=True)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(out.read_bytes()).run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_kill_9_then_resume_ends_as_an_uninterrupted_run(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "resdsl", "train", SPEC, *FAST, "--out", str(out)]
    kill_at_first_checkpoint(command, out)
    assert (out / "checkpoint.pt").exists()
    assert len(metrics(out)) < 3
    assert subprocess.run(command, capture_output=True).returncode == 0
    keys = ("train_loss", "train_error", "test_loss", "test_error", "lr", "iteration")
    assert [[r[k] for k in keys] for r in metrics(out)] == [[r[k] for k in keys] for r in metrics(digits_run)]


def test_plot_draws_the_runs(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    assert main(["plot", str(digits_run), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path), "-o", str(out)]) == 1  # not a run


def _write_cifar(root: Path, per_batch: int = 6) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)], b"batch_label": name.encode()}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar_python_batches_load_and_train(tmp_path: Path) -> None:
    from resdsl.training.sources import load_dataset
    _write_cifar(tmp_path / "cifar")
    data = load_dataset(f"cifar10:{tmp_path / 'cifar'}")
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32) and data.classes == 10
    with open(tmp_path / "cifar" / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(data.train_x[6:12], raw[b"data"].reshape(-1, 3, 32, 32) / np.float32(255))
    spec = tmp_path / "tiny.rds"
    spec.write_text("network tiny {\n input 3x32x32\n classes 10\n stem { conv 4 k3 s2 p1; bn; relu }\n"
                    " stage layer1: basic(4) x 1\n head { avgpool; fc classes }\n}\n")
    assert main(["train", str(spec), "--data", f"cifar10:{tmp_path / 'cifar'}", "--epochs", "1", "--batch", "8",
                 "--out", str(tmp_path / "run")]) == 0
    assert len(metrics(tmp_path / "run")) == 1


def test_augmentation_pads_crops_and_flips() -> None:
    import torch
    from resdsl.training.data import augment, crop_flip
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) + 1
    y = augment(x, crop_flip(2, torch.Generator().manual_seed(0), pad=1), pad=1)
    assert y.shape == x.shape
    for i in range(2):  # each image is a 4x4 window of its zero-padded self, maybe mirrored
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        windows = [padded[:, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(2)) for w in windows)


@pytest.mark.parametrize("argv, message", [
    (["--data", "digits", "--out", "{file}"], "is a file, not a run directory"),
    (["--data", "cifar10:{missing}", "--out", "{dir}"], "is not a directory"),
    (["--data", "mnist", "--out", "{dir}"], "unknown data `mnist`"),
    (["--data", "digits", "--epochs", "0", "--out", "{dir}"], "--epochs"),
    (["--data", "digits", "--lr", "0", "--out", "{dir}"], "--lr"),
    (["--data", "digits", "--batch", "-1", "--out", "{dir}"], "--batch"),
    (["--data", "digits", "--device", "tpu", "--out", "{dir}"], "unknown device `tpu`"),
    (["--data", "digits", "--device", "meta", "--out", "{dir}"], "training on `meta` is not supported"),
])
def test_bad_training_input_is_a_clear_error(argv, message, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    argv = [a.format(file=tmp_path / "file", missing=tmp_path / "nope", dir=tmp_path / "run") for a in argv]
    assert main(["train", SPEC, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_class_count_and_channels_must_fit_the_data(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "seven.rds"
    spec.write_text(Path(SPEC).read_text().replace("classes 10", "classes 7"))
    assert main(["train", str(spec), "--data", "digits", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "seven.rds:4:13: error: `digits_resnet` has 7 classes, digits has 10" in err
    spec.write_text(Path(SPEC).read_text().replace("1x8x8", "4x8x8"))
    assert main(["train", str(spec), "--data", "digits", "--out", str(tmp_path / "b")]) == 1
    assert "the spec takes 4x8x8 inputs, digits has 1x8x8 images" in capsys.readouterr().err


def test_a_run_of_another_spec_is_refused(digits_run: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.rds"
    other.write_text(Path(SPEC).read_text().replace("digits_resnet", "other_net"))
    assert main(["train", str(other), *FAST, "--out", str(digits_run)]) == 1
    err = capsys.readouterr().err
    assert "holds a run of `digits_resnet`" in err and "not of `other_net`" in err


def test_a_run_of_the_same_spec_with_other_set_values_is_refused(digits_run: Path, capsys) -> None:
    # The same text, another network: --set is part of what the run trained.
    assert json.loads((digits_run / "config.json").read_text())["overrides"] == {}
    assert main(["train", SPEC, *FAST, "--set", "input=1x16x16", "--out", str(digits_run)]) == 1
    assert "was trained with other --set settings: {}" in capsys.readouterr().err


def test_damaged_cifar_files_are_named(tmp_path: Path, capsys) -> None:
    _write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    assert main(["train", SPEC, "--data", f"cifar10:{tmp_path / 'cifar'}", "--out", str(tmp_path / "r")]) == 1
    assert "data_batch_3 is not a CIFAR python batch" in capsys.readouterr().err


def test_image_folders_load_one_class_a_directory(tmp_path: Path) -> None:
    from PIL import Image
    from resdsl.training.sources import load_dataset
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.classes == 2 and data.train_x.shape == (6, 3, 10, 12) and list(data.train_y) == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_array_equal(data.train_x[0], first)
    (tmp_path / "train" / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="bad.png is not an image"):
        load_dataset(f"folder:{tmp_path}")
